//! Linear layers for the inference engine: weights packed once at load time into column
//! panels, `y = x W^T + b (+ residual)` computed by a register-blocked kernel (AVX-512 when
//! the CPU has it, found at run time; a portable kernel otherwise), split over threads by
//! blocks of rows and columns. fp32 weights, bf16 on AMX tiles (see [`super::amx`]) or
//! AVX-512 BF16 (see [`super::bf16`]), or int8 weights with int8 activations on AVX-512 VNNI
//! (see [`super::int8`]).

use super::amx::AmxWeights;
use super::bf16::Bf16Weights;
use super::int8::Int8Weights;
use super::parallel::{for_each_task, SyncPtr};

/// Columns per packed panel (one 512-bit register of f32).
pub const PANEL: usize = 16;
/// Rows per kernel call.
const MR: usize = 8;
/// Rows per task (a block of activations that stays in L2 across column blocks).
const ROW_CHUNK: usize = 64;
/// Columns per task.
const COL_CHUNK: usize = 64;
/// Inputs per pass over a task's rows (32 columns x 128 inputs x 4 bytes = 16 KB of weights).
const KC: usize = 128;

/// Which instructions the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// AVX-512F fp32, with VNNI int8 and BF16 dot products where the CPU has them, and AMX
    /// tiles for bf16 where the CPU has them and the OS lets the process use them.
    Avx512 { vnni: bool, bf16: bool, amx: bool },
    /// Plain Rust loops the compiler vectorises for the baseline target.
    Portable,
}

impl Kernels {
    /// The best the running CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                let bf16 = std::arch::is_x86_feature_detected!("avx512bf16");
                return Kernels::Avx512 {
                    vnni: std::arch::is_x86_feature_detected!("avx512vnni")
                        && std::arch::is_x86_feature_detected!("avx512bw"),
                    bf16,
                    amx: bf16 && super::amx::available(),
                };
            }
        }
        Kernels::Portable
    }

    /// Every kernel set this CPU can run, from the portable one to [`Kernels::detect`]'s
    /// (AVX-512 without AMX too, where the CPU has AMX), for tests that compare them.
    pub fn all_available() -> Vec<Self> {
        let mut sets = vec![Kernels::Portable];
        if let Kernels::Avx512 { vnni, bf16, amx } = Kernels::detect() {
            sets.push(Kernels::Avx512 {
                vnni,
                bf16,
                amx: false,
            });
            if amx {
                sets.push(Kernels::detect());
            }
        }
        sets
    }

    /// Whether bf16 layers run on AMX tiles.
    pub fn amx(&self) -> bool {
        matches!(self, Kernels::Avx512 { amx: true, .. })
    }

    pub fn name(&self) -> String {
        match self {
            Kernels::Avx512 { vnni, bf16, amx } => format!(
                "avx512{}{}{}",
                if *vnni { "+vnni" } else { "" },
                if *bf16 { "+bf16" } else { "" },
                if *amx { "+amx" } else { "" }
            ),
            Kernels::Portable => "portable".to_string(),
        }
    }

    /// The precision the linear layers get when `wanted` is asked for: int8 and bf16 need
    /// their instructions, fp32 runs everywhere.
    pub fn precision(&self, wanted: Precision) -> Precision {
        match (wanted, self) {
            (Precision::Int8, Kernels::Avx512 { vnni: true, .. }) => Precision::Int8,
            (Precision::Bf16, Kernels::Avx512 { bf16: true, .. }) => Precision::Bf16,
            _ => Precision::F32,
        }
    }
}

/// Number format of the linear layers' weights and inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    Bf16,
    Int8,
}

impl Precision {
    pub fn name(&self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

/// What a linear layer does after `x W^T + b`, while its output is still in cache.
#[derive(Clone, Copy)]
pub enum Epilogue<'a> {
    /// Nothing more.
    Bias,
    /// Add a residual `[rows, n]`.
    Residual(&'a [f32]),
    /// Apply the exact (erf) GELU.
    Gelu,
}

impl<'a> Epilogue<'a> {
    pub fn residual(&self) -> Option<&'a [f32]> {
        match self {
            Epilogue::Residual(r) => Some(r),
            _ => None,
        }
    }
}

/// After a task's block of output is written: the GELU of the epilogue over it.
///
/// # Safety
/// `out` must point at the layer output (row stride `n`), the block `rows x cols` owned by
/// the calling task.
unsafe fn finish_block(
    kernels: Kernels,
    epilogue: Epilogue,
    out: SyncPtr<f32>,
    n: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    if let Epilogue::Gelu = epilogue {
        for r in rows {
            let row = std::slice::from_raw_parts_mut(out.get().add(r * n + cols.start), cols.len());
            super::ops::gelu(kernels, row);
        }
    }
}

/// One kernel call's share of a layer's output: rows `r..r + rows` (at most 8), panels
/// `p..p + panels` (1 or 2 of 16 columns), inputs `k0..k0 + kc`.
#[derive(Clone, Copy, Debug)]
pub struct Tile {
    pub r: usize,
    pub rows: usize,
    pub p: usize,
    pub panels: usize,
    pub k0: usize,
    pub kc: usize,
}

/// Cover `out[rows, n]` with kernel calls: tasks of [`ROW_CHUNK`] x [`COL_CHUNK`] spread
/// over the cores, each going through its inputs in blocks of `kc` (the weights of a block
/// stay in L1 across its row tiles), calling `kernel(tile, first output of the tile)`, then
/// finishing its block with the epilogue (GELU).
#[allow(clippy::too_many_arguments)]
pub fn for_each_tile<F>(
    rows: usize,
    n: usize,
    k: usize,
    kc: usize,
    kernels: Kernels,
    epilogue: Epilogue,
    out: &mut [f32],
    kernel: F,
) where
    F: Fn(Tile, *mut f32) + Sync,
{
    assert!(out.len() >= rows * n && kc > 0);
    let row_chunks = rows.div_ceil(ROW_CHUNK);
    let col_chunks = n.div_ceil(COL_CHUNK);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    for_each_task(row_chunks * col_chunks, |task| {
        let (rc, cc) = (task / col_chunks, task % col_chunks);
        let r_end = ((rc + 1) * ROW_CHUNK).min(rows);
        let c_end = ((cc + 1) * COL_CHUNK).min(n);
        for k0 in (0..k).step_by(kc) {
            let mut r = rc * ROW_CHUNK;
            while r < r_end {
                let mr = (r_end - r).min(MR);
                let mut p = cc * COL_CHUNK / PANEL;
                while p * PANEL < c_end {
                    let np = if (p + 2) * PANEL <= c_end { 2 } else { 1 };
                    let tile = Tile {
                        r,
                        rows: mr,
                        p,
                        panels: np,
                        k0,
                        kc: kc.min(k - k0),
                    };
                    // SAFETY: inside `out` (rows < `rows`, columns < `n`); tasks own
                    // disjoint blocks of it.
                    kernel(tile, unsafe { out_ptr.get().add(r * n + p * PANEL) });
                    p += np;
                }
                r += mr;
            }
        }
        // SAFETY: this task's block, written above.
        unsafe {
            let first = rc * ROW_CHUNK;
            finish_block(
                kernels,
                epilogue,
                out_ptr,
                n,
                first..r_end,
                cc * COL_CHUNK..c_end,
            )
        };
    });
}

/// `$kernel::<R, NP>(args)` with a tile's rows (1 to 8) and panels (1 or 2) as constants,
/// so each shape gets a kernel with its accumulators in registers.
macro_rules! with_shape {
    ($rows:expr, $panels:expr, $kernel:ident $args:tt) => {
        with_shape!(@arms ($rows, $panels) $kernel $args [8 7 6 5 4 3 2 1])
    };
    (@arms $sel:tt $kernel:ident $args:tt [$($r:literal)*]) => {
        match $sel {
            $(($r, 2) => $kernel::<$r, 2> $args,)*
            $(($r, _) => $kernel::<$r, 1> $args,)*
            _ => unreachable!("a tile has 1 to 8 rows"),
        }
    };
}
pub(super) use with_shape;

/// Weight storage of one linear layer.
enum Weights {
    /// Laid out by [`packed_index`] with inputs one by one.
    F32(Vec<f32>),
    Bf16(Bf16Weights),
    Amx(AmxWeights),
    Int8(Int8Weights),
}

/// A linear layer `y = x W^T + b` with packed weights.
pub struct Linear {
    n: usize,
    k: usize,
    weights: Weights,
    bias: Vec<f32>,
    kernels: Kernels,
}

impl Linear {
    /// Pack a Hugging Face weight `w` (`[n, k]`, row-major) and bias `b` (`[n]`) in the
    /// precision `kernels.precision(wanted)` (fp32 where the shape does not fit).
    pub fn new(
        w: &[f32],
        b: &[f32],
        n: usize,
        k: usize,
        kernels: Kernels,
        wanted: Precision,
    ) -> Self {
        assert_eq!(w.len(), n * k, "weight shape");
        assert_eq!(b.len(), n, "bias shape");
        assert!(
            n.is_multiple_of(PANEL),
            "output width must be a multiple of {PANEL}"
        );
        let weights = match kernels.precision(wanted) {
            Precision::Int8 if k.is_multiple_of(4) => Weights::Int8(Int8Weights::pack(w, n, k)),
            Precision::Bf16 if kernels.amx() && AmxWeights::fits(n, k) => {
                Weights::Amx(AmxWeights::pack(w, n, k))
            }
            Precision::Bf16 if k.is_multiple_of(2) => Weights::Bf16(Bf16Weights::pack(w, n, k)),
            _ => Weights::F32(pack_f32(w, n, k)),
        };
        Self {
            n,
            k,
            weights,
            bias: b.to_vec(),
            kernels,
        }
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    pub fn precision(&self) -> Precision {
        match self.weights {
            Weights::F32(_) => Precision::F32,
            Weights::Bf16(_) | Weights::Amx(_) => Precision::Bf16,
            Weights::Int8(_) => Precision::Int8,
        }
    }

    /// `out[rows, n] = x[rows, k] W^T + b`, then the epilogue.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32], epilogue: Epilogue) {
        assert!(x.len() >= rows * self.k && out.len() >= rows * self.n);
        if let Some(r) = epilogue.residual() {
            assert!(r.len() >= rows * self.n);
        }
        let k = self.kernels;
        match &self.weights {
            Weights::Int8(w) => w.forward(x, rows, &self.bias, out, epilogue, k),
            Weights::Bf16(w) => w.forward(x, rows, &self.bias, out, epilogue, k),
            Weights::Amx(w) => w.forward(x, rows, &self.bias, out, epilogue, k),
            Weights::F32(packed) => self.forward_f32(packed, x, rows, out, epilogue),
        }
    }

    fn forward_f32(
        &self,
        packed: &[f32],
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        epilogue: Epilogue,
    ) {
        let (n, k) = (self.n, self.k);
        let residual = epilogue.residual();
        let kernels = self.kernels;
        for_each_tile(rows, n, k, KC, kernels, epilogue, out, |t, c| {
            let block = Block::of(t, (n, k), x, packed, &self.bias, residual);
            // SAFETY: `c` is this tile's place in `out` (see `for_each_tile`); `block`
            // stays inside its rows and panels.
            unsafe {
                match kernels {
                    #[cfg(target_arch = "x86_64")]
                    Kernels::Avx512 { .. } => avx512::block(&block, c),
                    _ => portable_block(&block, c),
                }
            }
        });
    }
}

/// Where weight (column `j`, input `kk`) of an `[n, k]` matrix goes when packed with
/// inputs in groups of `g` (1 for f32, 2 for bf16, 4 for int8): blocks of 32 columns (16
/// for an odd last panel), each `[k / g][width][g]`, so a kernel reads a single stream.
pub fn packed_index(j: usize, kk: usize, n: usize, k: usize, g: usize) -> usize {
    let block = j / (2 * PANEL);
    let width = if (block + 1) * 2 * PANEL <= n {
        2 * PANEL
    } else {
        PANEL
    };
    block * 2 * PANEL * k + (kk / g) * width * g + (j % (2 * PANEL)) * g + kk % g
}

fn pack_f32(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut packed = vec![0f32; n * k];
    for j in 0..n {
        for kk in 0..k {
            packed[packed_index(j, kk, n, k, 1)] = w[j * k + kk];
        }
    }
    packed
}

/// One kernel call's operands, whatever the number format (activations `A`, packed
/// weights `W`): up to [`MR`] rows of activations times one or two panels of 16 columns.
#[derive(Clone, Copy)]
pub struct Block<'a, A, W> {
    /// Activations from the first row (row stride `k`).
    pub a: &'a [A],
    pub k: usize,
    /// The inputs this call sums over: `k0..k0 + kc`. The first block starts the sums, the
    /// others add to what the output holds; the last adds bias and residual.
    pub k0: usize,
    pub kc: usize,
    /// The tile's packed weights (see [`packed_index`]).
    pub panel: &'a [W],
    /// 1 or 2 panels of 16 columns.
    pub panels: usize,
    /// The tile's bias, and residual from its first row and column (row stride `n`).
    pub bias: &'a [f32],
    pub residual: Option<&'a [f32]>,
    /// Row stride of the output and residual.
    pub n: usize,
    pub rows: usize,
}

impl<'a, A, W> Block<'a, A, W> {
    /// The operands of tile `t` of a layer with `n` outputs and `k` inputs: activations
    /// `a` (`[rows, k]`), weights `packed` (`[n, k]` packed), `bias`, optional residual.
    pub fn of(
        t: Tile,
        (n, k): (usize, usize),
        a: &'a [A],
        packed: &'a [W],
        bias: &'a [f32],
        residual: Option<&'a [f32]>,
    ) -> Self {
        let (c0, c1) = (t.p * PANEL, (t.p + t.panels) * PANEL);
        Block {
            a: &a[t.r * k..],
            k,
            k0: t.k0,
            kc: t.kc,
            panel: &packed[c0 * k..c1 * k],
            panels: t.panels,
            bias: &bias[c0..c1],
            residual: residual.map(|res| &res[t.r * n + c0..]),
            n,
            rows: t.rows,
        }
    }
}

/// Portable kernel: the compiler vectorises the 16-wide inner loops.
///
/// # Safety
/// `c` must point at `rows` rows of stride `n` with `panels * 16` writable columns each.
unsafe fn portable_block(b: &Block<f32, f32>, c: *mut f32) {
    let width = b.panels * PANEL;
    let mut acc = [[0f32; 2 * PANEL]; MR];
    if b.k0 > 0 {
        for (r, row) in acc.iter_mut().enumerate().take(b.rows) {
            for (j, acc) in row.iter_mut().enumerate().take(width) {
                *acc = *c.add(r * b.n + j);
            }
        }
    }
    for kk in b.k0..b.k0 + b.kc {
        let w = &b.panel[kk * width..(kk + 1) * width];
        for (r, row) in acc.iter_mut().enumerate().take(b.rows) {
            let a = b.a[r * b.k + kk];
            for (acc, w) in row.iter_mut().zip(w) {
                *acc += a * w;
            }
        }
    }
    let last = b.k0 + b.kc == b.k;
    for (r, row) in acc.iter().enumerate().take(b.rows) {
        for (j, acc) in row.iter().enumerate().take(width) {
            let mut v = *acc;
            if last {
                v += b.bias[j];
                if let Some(res) = b.residual {
                    v += res[r * b.n + j];
                }
            }
            *c.add(r * b.n + j) = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Block, PANEL};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX-512F; `c` as in [`super::portable_block`].
    pub unsafe fn block(b: &Block<f32, f32>, c: *mut f32) {
        with_shape!(b.rows, b.panels, kernel(b, c))
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const R: usize, const NP: usize>(b: &Block<f32, f32>, c: *mut f32) {
        let mut acc = [[_mm512_setzero_ps(); NP]; R];
        if b.k0 > 0 {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (p, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_loadu_ps(c.add(r * b.n + p * PANEL));
                }
            }
        }
        let a = b.a.as_ptr();
        let w = b.panel.as_ptr();
        for kk in b.k0..b.k0 + b.kc {
            let mut wv = [_mm512_setzero_ps(); NP];
            for (p, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_ps(w.add((kk * NP + p) * PANEL));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * b.k + kk));
                for p in 0..NP {
                    acc[p] = _mm512_fmadd_ps(av, wv[p], acc[p]);
                }
            }
        }
        let last = b.k0 + b.kc == b.k;
        for p in 0..NP {
            let bias = _mm512_loadu_ps(b.bias.as_ptr().add(p * PANEL));
            for (r, acc) in acc.iter().enumerate() {
                let mut v = acc[p];
                if last {
                    v = _mm512_add_ps(v, bias);
                    if let Some(res) = b.residual {
                        let res = _mm512_loadu_ps(res.as_ptr().add(r * b.n + p * PANEL));
                        v = _mm512_add_ps(v, res);
                    }
                }
                _mm512_storeu_ps(c.add(r * b.n + p * PANEL), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// erf by its Taylor series in f64 (reference; 1 - erf(4) < 2e-8).
    fn libm_erf(x: f32) -> f32 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let x = x as f64;
        let (mut sum, mut term, mut n) = (0.0, x, 0.0);
        while n < 200.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        (sum * 2.0 / std::f64::consts::PI.sqrt()) as f32
    }

    /// Every kernel set and precision against a plain matrix product, on shapes with an odd
    /// last panel, rows that fill no kernel call evenly, several row chunks and input blocks.
    #[test]
    fn linear_matches_plain_product() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let shapes = [
            (1usize, 16usize, 8usize),
            (13, 48, 300),
            (150, 96, 64),
            (40, 80, 96),
            (200, 160, 128),
        ];
        for &(rows, n, k) in &shapes {
            let w: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-0.5..0.5)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.5..0.5)).collect();
            let x: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let res: Vec<f32> = (0..rows * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let want: Vec<f32> = (0..rows * n)
                .map(|i| {
                    let (r, j) = (i / n, i % n);
                    let dot: f32 = (0..k).map(|kk| x[r * k + kk] * w[j * k + kk]).sum();
                    dot + b[j] + res[i]
                })
                .collect();
            for kernels in Kernels::all_available() {
                for wanted in [Precision::F32, Precision::Bf16, Precision::Int8] {
                    let lin = Linear::new(&w, &b, n, k, kernels, wanted);
                    if kernels.amx() && wanted == Precision::Bf16 && AmxWeights::fits(n, k) {
                        assert!(matches!(lin.weights, Weights::Amx(_)), "{n}x{k} not on AMX");
                    }
                    let mut out = vec![0f32; rows * n];
                    lin.forward(&x, rows, &mut out, Epilogue::Residual(&res));
                    let mut activated = vec![0f32; rows * n];
                    lin.forward(&x, rows, &mut activated, Epilogue::Gelu);
                    let tol = match lin.precision() {
                        Precision::F32 => 1e-4,
                        Precision::Bf16 => 0.05,
                        Precision::Int8 => 0.15,
                    };
                    for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() < tol,
                            "{kernels:?} {wanted:?} {rows}x{n}x{k} at {i}: {g} vs {w}"
                        );
                        let y = w - res[i];
                        let gelu = 0.5 * y * (1.0 + libm_erf(y / 2f32.sqrt()));
                        let a = activated[i];
                        assert!((a - gelu).abs() < tol, "GELU at {i}: {a} vs {gelu}");
                    }
                }
            }
        }
    }
}
