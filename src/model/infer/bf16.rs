//! bf16 linear layers for CPUs with AVX-512 BF16: weights rounded once to bfloat16 (8-bit
//! mantissa, fp32 range), activations rounded per call, pairs of products summed into fp32
//! by `vdpbf16ps` (twice the multiply-adds of fp32 FMA per instruction, half the weight
//! bytes). Accumulation stays fp32, so the error is the rounding of the inputs only.

use super::linear::{for_each_tile, packed_index, Block, Epilogue, Kernels, PANEL};

/// Round an f32 to the nearest bfloat16 (ties to even), as its 16 bits.
#[inline(always)]
pub fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `w` (`[n, k]`, row-major) rounded to bf16, element `(j, kk)` stored at `index(j, kk)`
/// (each kernel's packed layout).
pub fn pack_bf16(w: &[f32], n: usize, k: usize, index: impl Fn(usize, usize) -> usize) -> Vec<u16> {
    let mut packed = vec![0u16; n * k];
    for j in 0..n {
        for kk in 0..k {
            packed[index(j, kk)] = to_bf16(w[j * k + kk]);
        }
    }
    packed
}

/// Round `x` to bf16 into `out` (same length): 16 at a time with `vcvtneps2bf16` where the
/// CPU has AVX-512 BF16 (round to nearest even, as [`to_bf16`]; it reads subnormal inputs
/// as zero, a difference below bf16's own resolution).
pub fn round_into(kernels: Kernels, x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    if let Kernels::Avx512 { bf16: true, .. } = kernels {
        // SAFETY: the CPU has AVX-512F and BF16 (detected); equal lengths checked.
        unsafe { round_avx512(x, out) };
        return;
    }
    let _ = kernels;
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = to_bf16(v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_avx512(x: &[f32], out: &mut [u16]) {
    use std::arch::x86_64::*;
    let chunks = x.len() / 16;
    for c in 0..chunks {
        let v = _mm512_loadu_ps(x.as_ptr().add(c * 16));
        let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
        _mm256_storeu_si256(out.as_mut_ptr().add(c * 16) as *mut __m256i, b);
    }
    for i in chunks * 16..x.len() {
        out[i] = to_bf16(x[i]);
    }
}

/// Packed bf16 weights of one layer.
pub struct Bf16Weights {
    n: usize,
    k: usize,
    /// Pairs of inputs per column, in blocks of 32 columns (see [`packed_index`]).
    packed: Vec<u16>,
}

impl Bf16Weights {
    /// Round and pack `w` (`[n, k]`, row-major); `k` must be even.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert!(k.is_multiple_of(2) && n.is_multiple_of(PANEL));
        let packed = pack_bf16(w, n, k, |j, kk| packed_index(j, kk, n, k, 2));
        Self { n, k, packed }
    }

    /// `out = x W^T + bias`, then the epilogue, for `rows` rows of `x`.
    pub fn forward(
        &self,
        x: &[f32],
        rows: usize,
        bias: &[f32],
        out: &mut [f32],
        epilogue: Epilogue,
        kernels: Kernels,
    ) {
        let (n, k) = (self.n, self.k);
        let residual = epilogue.residual();
        let mut xb = vec![0u16; rows * k];
        round_into(kernels, &x[..rows * k], &mut xb);
        for_each_tile(rows, n, k, k, kernels, epilogue, out, |t, c| {
            let block = Block::of(t, (n, k), &xb, &self.packed, bias, residual);
            // SAFETY: Bf16Weights exist only where the CPU has AVX-512 BF16 (see
            // `Linear::new`); `c` is this tile's place in `out`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                kernel::block(&block, c)
            };
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::super::linear::{with_shape, Block};
    use super::PANEL;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX-512F and BF16; `c` must point at `b.rows` rows of stride `b.n`
    /// with `b.panels * 16` writable columns.
    pub unsafe fn block(b: &Block<u16, u16>, c: *mut f32) {
        with_shape!(b.rows, b.panels, kernel(b, c))
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel<const R: usize, const NP: usize>(b: &Block<u16, u16>, c: *mut f32) {
        let mut acc = [[_mm512_setzero_ps(); NP]; R];
        let a = b.a.as_ptr();
        let w = b.panel.as_ptr();
        let mut kk = 0;
        while kk < b.k {
            let mut wv = [_mm512_setzero_si512(); NP];
            for (p, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_si512(w.add(kk * NP * PANEL + p * PANEL * 2) as *const _);
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32((a.add(r * b.k + kk) as *const i32).read_unaligned());
                for p in 0..NP {
                    acc[p] = _mm512_dpbf16_ps(
                        acc[p],
                        std::mem::transmute::<__m512i, __m512bh>(av),
                        std::mem::transmute::<__m512i, __m512bh>(wv[p]),
                    );
                }
            }
            kk += 2;
        }
        for p in 0..NP {
            let off = p * PANEL;
            let bias = _mm512_loadu_ps(b.bias.as_ptr().add(off));
            for (r, acc) in acc.iter().enumerate() {
                let mut v = _mm512_add_ps(acc[p], bias);
                if let Some(res) = b.residual {
                    v = _mm512_add_ps(v, _mm512_loadu_ps(res.as_ptr().add(r * b.n + off)));
                }
                _mm512_storeu_ps(c.add(r * b.n + off), v);
            }
        }
    }
}
