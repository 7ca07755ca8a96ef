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

/// Exact (erf) GELU of every element, in place.
pub fn gelu(k: Kernels, x: &mut [f32]) {
    if x.len() >= 1 << 14 {
        let chunk = 1 << 13;
        let ptr = SyncPtr(x.as_mut_ptr());
        let len = x.len();
        for_each_task(len.div_ceil(chunk), |t| {
            let start = t * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: tasks own disjoint chunks of `x`, which outlives this call.
            let part = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(start), end - start) };
            multiversion!(k, gelu(part))
        });
    } else {
        multiversion!(k, gelu(x))
    }
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
        // SAFETY: each task writes the columns of its head in the rows of its sequence.
        multiversion!(k, attend(qkv, from, to, h, heads, hidden, ptr))
    });
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
        ) {
            let d = hidden / heads;
            let stride = 3 * hidden;
            let scale = 1.0 / (d as f32).sqrt();
            let len = to - from;
            let mut scores = vec![0f32; len];
            let mut ctx = vec![0f32; d];
            // Keys transposed (`[d][len]`), so scores are axpys over the sequence, not dots.
            let mut keys_t = vec![0f32; d * len];
            for j in 0..len {
                let kr = (from + j) * stride + hidden + h * d;
                for (dd, v) in qkv[kr..kr + d].iter().enumerate() {
                    keys_t[dd * len + j] = *v;
                }
            }
            for i in from..to {
                let q = &qkv[i * stride + h * d..i * stride + h * d + d];
                scores.iter_mut().for_each(|s| *s = 0.0);
                for (dd, qv) in q.iter().enumerate() {
                    let qv = qv * scale;
                    for (s, k) in scores.iter_mut().zip(&keys_t[dd * len..(dd + 1) * len]) {
                        *s += qv * k;
                    }
                }
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
                for s in scores.iter_mut() {
                    *s = super::exp(*s - max);
                }
                let total = super::sum(&scores);
                ctx.iter_mut().for_each(|c| *c = 0.0);
                for (j, s) in scores.iter().enumerate() {
                    let vr = (from + j) * stride + 2 * hidden + h * d;
                    for (c, v) in ctx.iter_mut().zip(&qkv[vr..vr + d]) {
                        *c += s * v;
                    }
                }
                let o = out.get().add(i * hidden + h * d);
                for (c, v) in ctx.iter().enumerate() {
                    *o.add(c) = v / total;
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
    let n = round(x * std::f32::consts::LOG2_E);
    // ln 2 in two parts (Cody and Waite) so the reduction stays exact.
    let r = (x - n * 0.693_359_4) + n * 2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    f32::from_bits(((n as i32 + 127) << 23) as u32) * p
}

/// Round to the nearest integer (ties to even) for |x| < 2^22, by adding and removing
/// 1.5 * 2^23: plain float adds, so loops over it vectorise on any target.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// The error function (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}
