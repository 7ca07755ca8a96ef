//! bf16 linear layers on Intel AMX (Advanced Matrix Extensions): the CPU's tile unit
//! multiplies a 16 x 32 block of bf16 activations by a 32 x 16 block of bf16 weights into
//! 16 x 16 fp32 sums in one instruction (`tdpbf16ps`), about fourteen times the fp32 FMA
//! rate of the same core measured here. Same numbers as [`super::bf16`] (inputs rounded to
//! bfloat16, sums in fp32), different instructions. Used for the bf16 precision where the
//! CPU has AMX-BF16 and Linux grants the process the tile state (asked once, at detection).
//!
//! Layout: weights packed once into column blocks of 32 (16 for an odd last one), each a
//! sequence of `k / 32` steps of one or two 1 KB tiles `[16 input pairs][16 columns][2]`;
//! activations rounded to bf16 per call into the same kind of 1 KB tiles `[16 rows][32
//! inputs]` (rows padded to a multiple of 32), so every tile load reads one contiguous
//! kilobyte. A task owns blocks of 32 rows x 32 columns: four accumulator tiles (two row
//! halves x two column halves), two activation tiles and two weight tiles, the eight tile
//! registers.

use super::bf16::pack_bf16;
use super::linear::{Epilogue, Kernels, PANEL};
use super::parallel::{for_each_task, SyncPtr};
use std::cell::RefCell;

/// Inputs per tile step (one tile row: 64 bytes of bf16).
pub const STEP: usize = 32;
/// Rows per task block (two tiles of 16).
const BLOCK_ROWS: usize = 32;
/// Columns per task block (two tiles of 16).
const BLOCK_COLS: usize = 2 * PANEL;
/// Elements of one weight tile.
const TILE: usize = 16 * 32;
/// Row blocks per task, and column blocks per task.
const TASK_ROW_BLOCKS: usize = 4;
const TASK_COL_BLOCKS: usize = 2;

/// Whether this process can use AMX-BF16 tiles: the CPU has them, the OS saves their
/// state, and (Linux) the kernel granted this process the tile data. Asked once.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    /// XCR0 bits of the tile configuration and tile data state.
    const XCR0_TILE: u64 = 3 << 17;
    let (leaf7, leaf1) = (__cpuid_count(7, 0), __cpuid(1));
    let amx_bf16 = leaf7.edx >> 22 & 1 == 1;
    let amx_tile = leaf7.edx >> 24 & 1 == 1;
    let osxsave = leaf1.ecx >> 27 & 1 == 1;
    if !(amx_bf16 && amx_tile && osxsave && std::arch::is_x86_feature_detected!("avx512bf16")) {
        return false;
    }
    // SAFETY: OSXSAVE is set, so xgetbv is available.
    if unsafe { xcr0() } & XCR0_TILE != XCR0_TILE {
        return false;
    }
    // SAFETY: a plain system call with integer arguments; it fails cleanly on kernels
    // without AMX support.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// # Safety
/// The CPU must support xgetbv (CPUID.1:ECX.OSXSAVE).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    std::arch::x86_64::_xgetbv(0)
}

/// Packed bf16 weights of one layer for the tile unit.
pub struct AmxWeights {
    n: usize,
    k: usize,
    packed: Vec<u16>,
}

/// Where weight (column `j`, input `kk`) goes: column block `j / 32` (all blocks before it
/// are 32 wide), then the input step, then the tile (column half), pair row, column, pair.
fn amx_index(j: usize, kk: usize, n: usize, k: usize) -> usize {
    let block = j / BLOCK_COLS;
    let width = (n - block * BLOCK_COLS).min(BLOCK_COLS);
    let (jj, step) = (j % BLOCK_COLS, kk / STEP);
    block * BLOCK_COLS * k
        + step * width * STEP
        + (jj / PANEL) * TILE
        + (kk % STEP) / 2 * 32
        + (jj % PANEL) * 2
        + kk % 2
}

impl AmxWeights {
    /// Whether a layer of `n` outputs and `k` inputs fits the tiles.
    pub fn fits(n: usize, k: usize) -> bool {
        n.is_multiple_of(PANEL) && k.is_multiple_of(STEP) && k > 0
    }

    /// Round and pack `w` (`[n, k]`, row-major); see [`AmxWeights::fits`].
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert!(Self::fits(n, k));
        let packed = pack_bf16(w, n, k, |j, kk| amx_index(j, kk, n, k));
        Self { n, k, packed }
    }

    /// `out = x W^T + bias`, then the epilogue, for `rows` rows of `x`.
    ///
    /// Only call where [`available`] is true.
    pub fn forward(
        &self,
        x: &[f32],
        rows: usize,
        bias: &[f32],
        out: &mut [f32],
        epilogue: Epilogue,
        kernels: Kernels,
    ) {
        assert!(available(), "AMX weights on a CPU without AMX");
        let (n, k) = (self.n, self.k);
        let padded = rows.next_multiple_of(BLOCK_ROWS);
        let steps = k / STEP;
        ACTIVATIONS.with_borrow_mut(|xb| {
            xb.resize(padded * k, 0);
            round_to_tiles(&x[..rows * k], rows, k, xb);
            let row_blocks = padded / BLOCK_ROWS;
            let col_blocks = n.div_ceil(BLOCK_COLS);
            let row_tasks = row_blocks.div_ceil(TASK_ROW_BLOCKS);
            let col_tasks = col_blocks.div_ceil(TASK_COL_BLOCKS);
            let out_ptr = SyncPtr(out.as_mut_ptr());
            let residual = epilogue.residual();
            let xb = &xb[..];
            for_each_task(row_tasks * col_tasks, |task| {
                let (rt, ct) = (task / col_tasks, task % col_tasks);
                let rbs = rt * TASK_ROW_BLOCKS..((rt + 1) * TASK_ROW_BLOCKS).min(row_blocks);
                let cbs = ct * TASK_COL_BLOCKS..((ct + 1) * TASK_COL_BLOCKS).min(col_blocks);
                let mut sums = [0f32; BLOCK_ROWS * BLOCK_COLS];
                // SAFETY: `available()` holds (asserted above) and this thread configures its
                // tiles before use; every pointer stays inside `xb` (padded rows) and
                // `packed`; the task writes only its own rows and columns of `out`.
                unsafe {
                    tiles::configure();
                    for cb in cbs.clone() {
                        let width = (n - cb * BLOCK_COLS).min(BLOCK_COLS);
                        let w = self.packed.as_ptr().add(cb * BLOCK_COLS * k);
                        for rb in rbs.clone() {
                            // The block's two tiles of 16 rows, step after step.
                            let a = xb.as_ptr().add(rb * BLOCK_ROWS * k);
                            let a_low = a.add(16 * k);
                            let wide = width == BLOCK_COLS;
                            tiles::block(a, a_low, steps, w, wide, sums.as_mut_ptr());
                            let (r0, c0) = (rb * BLOCK_ROWS, cb * BLOCK_COLS);
                            let valid = BLOCK_ROWS.min(rows.saturating_sub(r0));
                            store_block(
                                &sums,
                                valid,
                                width,
                                &bias[c0..c0 + width],
                                residual.map(|res| &res[r0 * n + c0..]),
                                out_ptr.get().add(r0 * n + c0),
                                n,
                                matches!(epilogue, Epilogue::Gelu).then_some(kernels),
                            );
                        }
                    }
                    tiles::release();
                }
            });
        });
    }
}

/// Round `x` (`[rows, k]`) to bf16 into `out` as tiles: for each 16 rows, for each step of
/// 32 inputs, `[16 rows][32]`; rows from `rows` up to the next multiple of 32 are zero.
fn round_to_tiles(x: &[f32], rows: usize, k: usize, out: &mut [u16]) {
    let steps = k / STEP;
    let padded = rows.next_multiple_of(BLOCK_ROWS);
    assert!(x.len() >= rows * k && out.len() >= padded * k);
    // SAFETY: AMX weights exist only where the CPU has AVX-512 BF16 (`available`); the
    // loop stays inside the lengths checked above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        round_to_tiles_avx512(x, rows, steps, out)
    };
    #[cfg(not(target_arch = "x86_64"))]
    for r in 0..rows {
        for s in 0..steps {
            let dst = ((r / 16) * steps + s) * TILE + (r % 16) * STEP;
            for i in 0..STEP {
                out[dst + i] = super::bf16::to_bf16(x[r * k + s * STEP + i]);
            }
        }
    }
    // Whole tiles of padding, then the rest of a partly filled tile of 16 rows.
    out[rows.next_multiple_of(16) * k..padded * k].fill(0);
    for r in rows..rows.next_multiple_of(16) {
        for s in 0..steps {
            let dst = ((r / 16) * steps + s) * TILE + (r % 16) * STEP;
            out[dst..dst + STEP].fill(0);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_to_tiles_avx512(x: &[f32], rows: usize, steps: usize, out: &mut [u16]) {
    use std::arch::x86_64::*;
    let k = steps * STEP;
    for r in 0..rows {
        let src = x.as_ptr().add(r * k);
        let dst = out
            .as_mut_ptr()
            .add((r / 16) * steps * TILE + (r % 16) * STEP);
        for s in 0..steps {
            let lo = _mm512_loadu_ps(src.add(s * STEP));
            let hi = _mm512_loadu_ps(src.add(s * STEP + 16));
            let b: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.add(s * TILE) as *mut _, b);
        }
    }
}

/// Write one block's sums plus bias (plus residual) to the layer output: `valid` rows of
/// `width` columns, row stride `n` for the output and the residual; with `gelu`, the GELU
/// of each row as it is written (while it is in L1).
///
/// # Safety
/// `out` must be writable for `valid` rows of `width` at stride `n`; `residual`, when
/// given, as long; on x86_64 the CPU must have AVX-512F (implied by [`available`]).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn store_block(
    sums: &[f32; BLOCK_ROWS * BLOCK_COLS],
    valid: usize,
    width: usize,
    bias: &[f32],
    residual: Option<&[f32]>,
    out: *mut f32,
    n: usize,
    gelu: Option<Kernels>,
) {
    let bias = &bias[..width];
    for r in 0..valid {
        let dst = std::slice::from_raw_parts_mut(out.add(r * n), width);
        let src = &sums[r * BLOCK_COLS..r * BLOCK_COLS + width];
        match residual {
            Some(res) => {
                let res = &res[r * n..r * n + width];
                for (((d, s), b), x) in dst.iter_mut().zip(src).zip(bias).zip(res) {
                    *d = s + b + x;
                }
            }
            None => {
                for ((d, s), b) in dst.iter_mut().zip(src).zip(bias) {
                    *d = s + b;
                }
            }
        }
        if let Some(kernels) = gelu {
            super::ops::gelu(kernels, dst);
        }
    }
}

thread_local! {
    /// The calling thread's bf16 copy of the activations, kept between calls.
    static ACTIVATIONS: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// The tile instructions (inline assembly: Rust has no stable AMX intrinsics).
#[cfg(target_arch = "x86_64")]
mod tiles {
    use std::arch::asm;

    /// Palette 1, eight tiles of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            // colsb[t] (u16 at 16 + 2t) = 64, rows[t] (u8 at 48 + t) = 16.
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    /// Load the tile configuration on this thread.
    ///
    /// # Safety
    /// The process must have AMX permission ([`super::available`]).
    pub unsafe fn configure() {
        asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
    }

    /// Return the tiles to their initial state (cheaper context switches).
    ///
    /// # Safety
    /// As [`configure`].
    pub unsafe fn release() {
        asm!("tilerelease", options(nostack, nomem));
    }

    /// `sums[32][32] = A * W` for one block of 32 rows and one column block: `a_high` and
    /// `a_low` the activation tiles of rows 0..16 and 16..32 (one per step, 1 KB apart),
    /// `w` the block's packed steps (two tiles per step when `wide`, else one and columns
    /// 16..32 of `sums` are left as they were).
    ///
    /// # Safety
    /// Tiles configured by [`configure`]; `a_high`, `a_low` readable for `steps` tiles; `w`
    /// for `steps` steps.
    pub unsafe fn block(
        a_high: *const u16,
        a_low: *const u16,
        steps: usize,
        w: *const u16,
        wide: bool,
        sums: *mut f32,
    ) {
        let a_stride = 64usize;
        let out_stride = super::BLOCK_COLS * 4;
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        let step_elems = if wide { 2 * super::TILE } else { super::TILE };
        for s in 0..steps {
            let a_hi = a_high.add(s * super::TILE);
            let a_lo = a_low.add(s * super::TILE);
            let w0 = w.add(s * step_elems);
            asm!(
                "tileloadd tmm4, [{a0} + {st}*1]",
                "tileloadd tmm5, [{a1} + {st}*1]",
                "tileloadd tmm6, [{w0} + {ws}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm2, tmm5, tmm6",
                a0 = in(reg) a_hi,
                a1 = in(reg) a_lo,
                w0 = in(reg) w0,
                st = in(reg) a_stride,
                ws = in(reg) 64usize,
                options(nostack, readonly)
            );
            if wide {
                asm!(
                    "tileloadd tmm7, [{w1} + {ws}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    w1 = in(reg) w0.add(super::TILE),
                    ws = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
        }
        let low = sums.add(16 * super::BLOCK_COLS);
        asm!(
            "tilestored [{hi} + {st}*1], tmm0",
            "tilestored [{lo} + {st}*1], tmm2",
            hi = in(reg) sums,
            lo = in(reg) low,
            st = in(reg) out_stride,
            options(nostack)
        );
        if wide {
            asm!(
                "tilestored [{hi} + {st}*1], tmm1",
                "tilestored [{lo} + {st}*1], tmm3",
                hi = in(reg) sums.add(16),
                lo = in(reg) low.add(16),
                st = in(reg) out_stride,
                options(nostack)
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod tiles {
    pub unsafe fn configure() {
        unreachable!("AMX is x86_64 only")
    }
    pub unsafe fn release() {}
    pub unsafe fn block(
        _: *const u16,
        _: *const u16,
        _: usize,
        _: *const u16,
        _: bool,
        _: *mut f32,
    ) {
        unreachable!("AMX is x86_64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_places_every_weight_once() {
        for &(n, k) in &[(32usize, 32usize), (48, 64), (80, 96)] {
            let mut seen = vec![false; n * k];
            for j in 0..n {
                for kk in 0..k {
                    let i = amx_index(j, kk, n, k);
                    assert!(!seen[i], "{n}x{k}: ({j}, {kk}) collides");
                    seen[i] = true;
                }
            }
        }
    }
}
