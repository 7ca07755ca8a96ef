//! The element-wise and attention steps of the inference forward: layer norm, GELU (erf),
//! and multi-head attention over unpadded sequences. Each is written as plain loops the
//! compiler vectorises, compiled twice (baseline and AVX-512) and picked at run time.

use super::linear::Kernels;
use super::parallel::{for_each_task, SyncPtr};

/// Compile `$body` for the baseline target and for AVX-512, and pick by `$kernels`.
macro_rules! multiversion {
    ($kernels:expr, $name:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if let Kernels::Avx512 { .. } = $kernels {
                // SAFETY: `Kernels::Avx512` is only chosen when the CPU has AVX-512F.
                unsafe { avx512::$name($($arg),*) }
            } else {
                // SAFETY: the baseline build needs nothing of the CPU.
                unsafe { generic::$name($($arg),*) }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = $kernels;
            // SAFETY: the baseline build needs nothing of the CPU.
            unsafe { generic::$name($($arg),*) }
        }
    }};
}

/// Layer norm of every `width`-wide row of `x`, in place.
pub fn layer_norm(k: Kernels, x: &mut [f32], width: usize, w: &[f32], b: &[f32], eps: f32) {
    multiversion!(k, layer_norm(x, width, w, b, eps))
}

/// Exact (erf) GELU of every element, in place (called on one tile's output at a time by
/// the linear layers' epilogue, so the caller's thread does it).
pub fn gelu(k: Kernels, x: &mut [f32]) {
    multiversion!(k, gelu(x))
}

/// Quantise each `width`-wide row of `x` to unsigned 8 bits in `q` (asymmetric, per row):
/// one `(scale, zero)` per row.
pub fn quantize_rows(k: Kernels, x: &[f32], width: usize, q: &mut [u8]) -> Vec<(f32, i32)> {
    let rows = x.len() / width;
    let mut params = vec![(1f32, 0i32); rows];
    let chunk = 16;
    let (qp, pp) = (SyncPtr(q.as_mut_ptr()), SyncPtr(params.as_mut_ptr()));
    for_each_task(rows.div_ceil(chunk), |t| {
        for r in t * chunk..((t + 1) * chunk).min(rows) {
            // SAFETY: each task writes its own rows of `q` and `params`.
            let row = unsafe { std::slice::from_raw_parts_mut(qp.get().add(r * width), width) };
            let p = multiversion!(k, quantize_u8(&x[r * width..(r + 1) * width], row));
            // SAFETY: as above.
            unsafe { *pp.get().add(r) = p };
        }
    });
    params
}

/// Multi-head self-attention over a batch of unpadded sequences.
///
/// `qkv` is `[tokens, 3 * hidden]` (queries, keys, values side by side), `starts` the first
/// row of each sequence plus the total at the end; writes `[tokens, hidden]` to `out`.
pub fn attention(k: Kernels, qkv: &[f32], starts: &[usize], heads: usize, out: &mut [f32]) {
    let hidden = qkv.len() / starts[starts.len() - 1].max(1) / 3;
    let seqs = starts.len() - 1;
    let ptr = SyncPtr(out.as_mut_ptr());
    for_each_task(seqs * heads, |t| {
        let (s, h) = (t / heads, t % heads);
        let (from, to) = (starts[s], starts[s + 1]);
        ATTENTION_SCRATCH.with_borrow_mut(|scratch| {
            // SAFETY: each task writes the columns of its head in the rows of its sequence.
            multiversion!(k, attend(qkv, from, to, h, heads, hidden, ptr, scratch))
        })
    });
}

thread_local! {
    /// Per thread: transposed keys and one row of scores, kept between tasks.
    static ATTENTION_SCRATCH: std::cell::RefCell<Vec<f32>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

macro_rules! kernels {
    ($($attr:meta)?) => {
        #[allow(clippy::missing_safety_doc)]
        $(#[$attr])?
        pub unsafe fn layer_norm(x: &mut [f32], width: usize, w: &[f32], b: &[f32], eps: f32) {
            for row in x.chunks_exact_mut(width) {
                let mean = super::sum(row) / width as f32;
                let var = super::sum_sq_dev(row, mean) / width as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for ((v, w), b) in row.iter_mut().zip(w).zip(b) {
                    *v = (*v - mean) * inv * w + b;
                }
            }
        }

        /// Quantise a row to unsigned 8 bits, `x ≈ scale * (q - zero)`; returns
        /// `(scale, zero)`.
        #[allow(clippy::missing_safety_doc)]
        $(#[$attr])?
        pub unsafe fn quantize_u8(x: &[f32], q: &mut [u8]) -> (f32, i32) {
            let mut lo = [0f32; 16];
            let mut hi = [0f32; 16];
            let chunks = x.chunks_exact(16);
            let rest = chunks.remainder();
            for c in chunks {
                for i in 0..16 {
                    lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
                    hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
                }
            }
            let mut min = lo.iter().fold(0f32, |m, v| m.min(*v));
            let mut max = hi.iter().fold(0f32, |m, v| m.max(*v));
            for v in rest {
                min = min.min(*v);
                max = max.max(*v);
            }
            let scale = if max > min { (max - min) / 255.0 } else { 1.0 };
            let zero = super::round(-min / scale).clamp(0.0, 255.0);
            let inv = 1.0 / scale;
            for (q, v) in q.iter_mut().zip(x) {
                let t = v * inv + zero;
                let t = if t < 0.0 { 0.0 } else if t > 255.0 { 255.0 } else { t };
                // Rounded by adding ROUND_MAGIC, whose low byte is zero: the sum's low byte
                // is the result (no saturating cast, which would not vectorise).
                *q = (t + super::ROUND_MAGIC).to_bits() as u8;
            }
            (scale, zero as i32)
        }

        #[allow(clippy::missing_safety_doc)]
        $(#[$attr])?
        pub unsafe fn gelu(x: &mut [f32]) {
            for v in x.iter_mut() {
                *v = 0.5 * *v * (1.0 + super::erf(*v * std::f32::consts::FRAC_1_SQRT_2));
            }
        }

        #[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
        $(#[$attr])?
        pub unsafe fn attend(
            qkv: &[f32],
            from: usize,
            to: usize,
            h: usize,
            heads: usize,
            hidden: usize,
            out: super::SyncPtr<f32>,
            scratch: &mut Vec<f32>,
        ) {
            const W: usize = 16;
            let d = hidden / heads;
            let stride = 3 * hidden;
            let scale = 1.0 / (d as f32).sqrt();
            let len = to - from;
            // Keys transposed to `[d][len rounded up to W]`, zero padded: sixteen scores at a
            // time stay in one register while the head dimension is summed.
            let padded = len.div_ceil(W) * W;
            scratch.resize(d * padded + padded, 0.0);
            let (keys_t, scores) = scratch.split_at_mut(d * padded);
            for dd in 0..d {
                keys_t[dd * padded + len..(dd + 1) * padded].fill(0.0);
            }
            for j in 0..len {
                let kr = (from + j) * stride + hidden + h * d;
                for (dd, v) in qkv[kr..kr + d].iter().enumerate() {
                    keys_t[dd * padded + j] = *v * scale;
                }
            }
            for i in from..to {
                let q = &qkv[i * stride + h * d..i * stride + h * d + d];
                for j0 in (0..padded).step_by(W) {
                    let mut acc = [0f32; W];
                    for (dd, qv) in q.iter().enumerate() {
                        let k: &[f32; W] = keys_t[dd * padded + j0..dd * padded + j0 + W]
                            .try_into()
                            .expect("a block of W");
                        for l in 0..W {
                            acc[l] += qv * k[l];
                        }
                    }
                    scores[j0..j0 + W].copy_from_slice(&acc);
                }
                let scores = &mut scores[..len];
                let max = super::max(scores);
                for s in scores.iter_mut() {
                    *s = super::exp(*s - max);
                }
                let inv_total = 1.0 / super::sum(scores);
                let o = out.get().add(i * hidden + h * d);
                let mut d0 = 0;
                while d0 < d {
                    let w = W.min(d - d0);
                    let mut acc = [0f32; W];
                    for (j, p) in scores.iter().enumerate() {
                        let vr = (from + j) * stride + 2 * hidden + h * d + d0;
                        if w == W {
                            let v: &[f32; W] = qkv[vr..vr + W].try_into().expect("a block of W");
                            for l in 0..W {
                                acc[l] += p * v[l];
                            }
                        } else {
                            for (a, v) in acc.iter_mut().zip(&qkv[vr..vr + w]) {
                                *a += p * v;
                            }
                        }
                    }
                    for (l, a) in acc.iter().enumerate().take(w) {
                        *o.add(d0 + l) = a * inv_total;
                    }
                    d0 += w;
                }
            }
        }
    };
}

mod generic {
    kernels!();
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    kernels!(target_feature(enable = "avx512f,avx512vl,fma"));
}

/// Sums over 16 lanes, so the compiler can vectorise them (a plain float sum must keep
/// its order).
#[inline(always)]
fn lanes<F: Fn(usize) -> f32>(len: usize, f: F) -> f32 {
    let mut acc = [0f32; 16];
    let full = len / 16 * 16;
    for i in (0..full).step_by(16) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
    }
    let mut total: f32 = acc.iter().sum();
    for i in full..len {
        total += f(i);
    }
    total
}

/// The largest element (NEG_INFINITY for none; NaNs ignored where they compare false), in
/// 16 lanes so that it vectorises.
#[inline(always)]
fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let full = a.len() / 16 * 16;
    for c in a[..full].chunks_exact(16) {
        for (m, v) in acc.iter_mut().zip(c) {
            *m = if *v > *m { *v } else { *m };
        }
    }
    let m = acc
        .iter()
        .fold(f32::NEG_INFINITY, |m, v| if *v > m { *v } else { m });
    a[full..].iter().fold(m, |m, v| if *v > m { *v } else { m })
}

#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    lanes(a.len(), |i| a[i])
}

#[inline(always)]
fn sum_sq_dev(a: &[f32], mean: f32) -> f32 {
    lanes(a.len(), |i| (a[i] - mean) * (a[i] - mean))
}

/// `e^x` from range reduction and a degree-6 polynomial (relative error about 2e-7), written
/// without library calls so loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Rounded to the nearest integer n by adding 1.5 * 2^23: the sum's low mantissa bits
    // are then n itself, read as an integer without a (saturating, unvectorisable) cast.
    let shifted = x * std::f32::consts::LOG2_E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    // ln 2 in two parts (Cody and Waite) so the reduction stays exact.
    let r = (x - n * 0.693_359_4) + n * 2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    f32::from_bits((n_int.wrapping_add(127) << 23) as u32) * p
}

/// 1.5 * 2^23: adding it to |x| < 2^22 rounds x to an integer (ties to even).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Round to the nearest integer (ties to even) for |x| < 2^22, by adding and removing
/// [`ROUND_MAGIC`]: plain float adds, so loops over it vectorise on any target.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    (x + ROUND_MAGIC) - ROUND_MAGIC
}

/// `1 / y` for finite `y >= 1` by three Newton steps from a bit-level first guess (relative
/// error below 1e-7): multiply-adds only, cheaper than a vector division.
#[inline(always)]
fn recip(y: f32) -> f32 {
    let mut r = f32::from_bits(0x7ef3_11c3u32.wrapping_sub(y.to_bits()));
    r = r * (2.0 - y * r);
    r = r * (2.0 - y * r);
    r * (2.0 - y * r)
}

/// The error function (Abramowitz and Stegun 7.1.26: absolute error below 1.5e-7, 1e-6 in
/// f32 arithmetic).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = recip(1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}
