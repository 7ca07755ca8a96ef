//! Int8 linear layers for CPUs with AVX-512 VNNI: weights quantised once per output column
//! (symmetric, 8 bits), activations quantised per row on the fly (asymmetric, unsigned 8
//! bits), products summed exactly in 32-bit integers by `vpdpbusd` (64 multiply-adds per
//! instruction, four times fp32 FMA), then scaled back to f32 with bias and residual.
//!
//! `y[j] = s_x s_w[j] (sum_k q_x[k] q_w[j,k] - z_x sum_k q_w[j,k]) + b[j]`.

use super::linear::{for_each_tile, packed_index, Block, Epilogue, Kernels, PANEL};
use super::ops::quantize_rows;

/// Quantised, packed weights of one layer.
pub struct Int8Weights {
    n: usize,
    k: usize,
    /// Groups of four inputs per column, in blocks of 32 columns (see [`packed_index`]).
    packed: Vec<i8>,
    /// Per output column: the weight scale and the sum of its quantised weights.
    scale: Vec<f32>,
    colsum: Vec<i32>,
}

/// One row of activations quantised to unsigned 8 bits: `x ≈ scale * (q - zero)`.
struct RowQuant {
    scale: f32,
    zero: i32,
}

impl Int8Weights {
    /// Quantise and pack `w` (`[n, k]`, row-major); `k` must be a multiple of 4.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert!(k.is_multiple_of(4) && n.is_multiple_of(PANEL));
        let mut packed = vec![0i8; n * k];
        let mut scale = vec![0f32; n];
        let mut colsum = vec![0i32; n];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale[j] = s;
            for (kk, v) in row.iter().enumerate() {
                let q = (v / s).round().clamp(-127.0, 127.0) as i8;
                colsum[j] += q as i32;
                packed[packed_index(j, kk, n, k, 4)] = q;
            }
        }
        Self {
            n,
            k,
            packed,
            scale,
            colsum,
        }
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
        let mut q = vec![0u8; rows * k];
        let quants: Vec<RowQuant> = quantize_rows(kernels, &x[..rows * k], k, &mut q)
            .into_iter()
            .map(|(scale, zero)| RowQuant { scale, zero })
            .collect();
        for_each_tile(rows, n, k, k, kernels, epilogue, out, |t, c| {
            let block = Block::of(t, (n, k), &q, &self.packed, bias, residual);
            let c0 = t.p * PANEL;
            let scales = Scales {
                rows: &quants[t.r..t.r + t.rows],
                columns: &self.scale[c0..],
                colsum: &self.colsum[c0..],
            };
            // SAFETY: Int8Weights exist only where the CPU has AVX-512 VNNI (see
            // `Linear::new`); `c` is this tile's place in `out`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                vnni::block(&block, &scales, c)
            };
        });
    }
}

/// What turns a tile's integer sums back into f32: its rows' quantisation, its columns'
/// weight scales and sums.
struct Scales<'a> {
    rows: &'a [RowQuant],
    columns: &'a [f32],
    colsum: &'a [i32],
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::super::linear::{with_shape, Block};
    use super::{Scales, PANEL};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX-512F, BW and VNNI; `c` must point at `b.rows` rows of stride
    /// `b.n` with `b.panels * 16` writable columns.
    pub unsafe fn block(b: &Block<u8, i8>, s: &Scales, c: *mut f32) {
        with_shape!(b.rows, b.panels, kernel(b, s, c))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel<const R: usize, const NP: usize>(b: &Block<u8, i8>, s: &Scales, c: *mut f32) {
        let mut acc = [[_mm512_setzero_si512(); NP]; R];
        let a = b.a.as_ptr();
        let w = b.panel.as_ptr();
        let mut kk = 0;
        while kk < b.k {
            let mut wv = [_mm512_setzero_si512(); NP];
            for (p, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_si512(w.add(kk * NP * PANEL + p * PANEL * 4) as *const _);
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32((a.add(r * b.k + kk) as *const i32).read_unaligned());
                for p in 0..NP {
                    acc[p] = _mm512_dpbusd_epi32(acc[p], av, wv[p]);
                }
            }
            kk += 4;
        }
        for p in 0..NP {
            let off = p * PANEL;
            let scale = _mm512_loadu_ps(s.columns.as_ptr().add(off));
            let colsum = _mm512_loadu_si512(s.colsum.as_ptr().add(off) as *const _);
            let bias = _mm512_loadu_ps(b.bias.as_ptr().add(off));
            for (r, acc) in acc.iter().enumerate() {
                let rq = &s.rows[r];
                let corrected = _mm512_sub_epi32(
                    acc[p],
                    _mm512_mullo_epi32(colsum, _mm512_set1_epi32(rq.zero)),
                );
                let sv = _mm512_mul_ps(scale, _mm512_set1_ps(rq.scale));
                let mut v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(corrected), sv, bias);
                if let Some(res) = b.residual {
                    v = _mm512_add_ps(v, _mm512_loadu_ps(res.as_ptr().add(r * b.n + off)));
                }
                _mm512_storeu_ps(c.add(r * b.n + off), v);
            }
        }
    }
}
