//! A cache-blocked f32 GEMM for the encoder's dense layers, `x · Wᵀ` with the
//! weights packed once at load.
//!
//! General-purpose GEMMs (candle's `gemm`) repack the weight matrix on every
//! call and are tuned for large square products; the encoder multiplies a few
//! to a few thousand token rows by fixed weights of at most 1536 × 1536. Here:
//!
//! - **Weights packed once** ([`PackedWeight`]) into column panels of `NR`
//!   output features, `k`-major inside a panel, so the micro-kernel streams
//!   them front to back and a `KC`-deep slice of a panel is contiguous.
//! - **Activations packed per call** into row tiles of `MR` tokens (`k`-major,
//!   so one token's inputs are a broadcast away); cheap, `k` reads per output.
//! - **Blocking**: `k` in slices of at most `KC` (one `KC × NR` weight slice
//!   stays in L1 while every row tile of a block passes over it), rows in
//!   blocks of `MC` (one `MC × KC` block of activations stays in L2 while it
//!   meets every weight panel of a task).
//! - **A register-tiled micro-kernel per ISA** ([`MicroKernel`]): AVX-512F
//!   12 × 32, AVX2+FMA 6 × 16, and a portable 6 × 8 the compiler
//!   vectorises; a last tile of fewer than `MR` tokens runs a shorter
//!   instance of the same kernel instead of computing padding.
//! - **Parallel** over (row block, panel range) tasks in the current rayon
//!   pool, sized so each thread gets a few.
//!
//! The products land in a blocked scratch layout; [`gemm`] then gathers each
//! output row and hands it to a row function (bias, GELU, residual and layer
//! norm in [`super::kernels`]), so the "epilogue" is one pass over L1-resident rows.

use rayon::prelude::*;

/// Which micro-kernels to run, as configured (`--kernels` / `KERNELS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Kernels {
    /// The best this CPU supports: AVX-512F, else AVX2+FMA, else portable.
    #[default]
    Auto,
    /// Force the AVX-512F kernels (an error where the CPU lacks them).
    Avx512,
    /// Force the AVX2+FMA kernels (an error where the CPU lacks them).
    Avx2,
    /// Force the portable kernels: plain Rust the compiler vectorises, any CPU.
    Portable,
}

impl Kernels {
    /// The `KERNELS` environment variable (default `auto`), for callers that
    /// have no command line of their own.
    pub fn from_env() -> Result<Self, String> {
        from_env("KERNELS", "auto, avx512, avx2 or portable")
    }

    /// The instruction set these kernels run with here, or why they cannot.
    pub fn resolve(self) -> Result<Isa, String> {
        let lacks = |what: &str| {
            let name = format!("{self:?}").to_lowercase();
            format!("--kernels {name}: this CPU lacks {what}")
        };
        match self {
            Self::Auto => Ok(Self::Avx512
                .resolve()
                .or_else(|_| Self::Avx2.resolve())
                .unwrap_or(Isa::Portable)),
            Self::Avx512 => {
                #[cfg(target_arch = "x86_64")]
                if let Some(kernel) = avx512::Avx512::detect() {
                    return Ok(Isa::Avx512(kernel));
                }
                Err(lacks("AVX-512F"))
            }
            Self::Avx2 => {
                #[cfg(target_arch = "x86_64")]
                if let Some(kernel) = avx2::Avx2::detect() {
                    return Ok(Isa::Avx2(kernel));
                }
                Err(lacks("AVX2 and FMA"))
            }
            Self::Portable => Ok(Isa::Portable),
        }
    }
}

/// How the packed weights are stored (`--weights` / `WEIGHTS`).
///
/// A lone sentence streams every weight of the model once per pass (42 MB
/// in f32 for all-MiniLM-L6-v2), so below a few dozen tokens a pass costs
/// its weight bytes more than its arithmetic, and more again when other work
/// has pushed the weights out of the shared cache between requests (on a
/// 2-core VM, a sentence after 4 ms of idleness took 8.1 ms against 5.2 ms
/// back to back, docs/BENCHMARKS.md). Half-precision weights halve those bytes; every product
/// and sum stays f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Weights {
    /// Exactly as stored in the model (the default).
    #[default]
    F32,
    /// Rounded once to IEEE half precision at load and widened back to f32
    /// in registers (`vcvtph2ps`): reduced precision, so opt-in (`worker
    /// bench` prints its smallest cosine against the f32 baseline).
    F16,
}

impl Weights {
    /// The `WEIGHTS` environment variable (default `f32`), for callers that
    /// have no command line of their own.
    pub fn from_env() -> Result<Self, String> {
        from_env("WEIGHTS", "f32 or f16")
    }

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }
}

/// A choice read from the environment variable `var`, its default when unset.
fn from_env<T: clap::ValueEnum + Default>(var: &str, expected: &str) -> Result<T, String> {
    match std::env::var(var) {
        Ok(v) => T::from_str(&v, true).map_err(|_| format!("{var}={v}: expected {expected}")),
        Err(_) => Ok(T::default()),
    }
}

/// A stored weight value: f32, or [`half::f16`] widened in the micro-kernel.
pub trait Element: Copy + Default + Send + Sync + 'static {
    /// Round a model weight to this format.
    fn from_f32(v: f32) -> Self;
    /// Widen back (the portable kernel; the SIMD ones widen in registers).
    fn to_f32(self) -> f32;
    /// Run `kernel`'s tile for weights of this format.
    fn tile<K: MicroKernel>(
        kernel: K,
        rows: usize,
        kc: usize,
        a: &[f32],
        b: &[Self],
        c: &mut [f32],
        accumulate: bool,
    );
}

impl Element for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn tile<K: MicroKernel>(
        kernel: K,
        rows: usize,
        kc: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        accumulate: bool,
    ) {
        kernel.tile(rows, kc, a, b, c, accumulate)
    }
}

impl Element for half::f16 {
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn tile<K: MicroKernel>(
        kernel: K,
        rows: usize,
        kc: usize,
        a: &[f32],
        b: &[half::f16],
        c: &mut [f32],
        accumulate: bool,
    ) {
        kernel.tile_f16(rows, kc, a, b, c, accumulate)
    }
}

/// The micro-kernels chosen at load. A SIMD variant holds proof that the
/// CPU was checked for its features, so it can only exist where it runs.
#[derive(Debug, Clone, Copy)]
pub enum Isa {
    /// AVX-512F, 12 tokens × 32 outputs per tile.
    #[cfg(target_arch = "x86_64")]
    Avx512(avx512::Avx512),
    /// AVX2 + FMA, 6 tokens × 16 outputs per tile.
    #[cfg(target_arch = "x86_64")]
    Avx2(avx2::Avx2),
    /// Plain Rust, 6 tokens × 8 outputs per tile.
    Portable,
}

impl Isa {
    /// Name for reports (`worker bench`, logs).
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512(_) => "avx512",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(_) => "avx2",
            Self::Portable => "portable",
        }
    }

    /// Whether code built for AVX2 + FMA may run with these kernels (outside
    /// the GEMM too): the portable ones ask for plain code on any CPU.
    pub fn avx2_fma(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512(_) => avx2::Avx2::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(_) => true,
            Self::Portable => false,
        }
    }

    fn panel_width(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512(_) => avx512::Avx512::NR,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(_) => avx2::Avx2::NR,
            Self::Portable => portable::Portable::NR,
        }
    }
}

/// A register-tiled micro-kernel: `c (MR × NR) = a · b` or `c += a · b` over
/// one `kc`-deep slice, for the first `rows ≤ MR` rows of a tile.
///
/// `a` is `kc × MR` (one tile of packed activations, `k`-major), `b` is
/// `kc × NR` (one panel slice of packed weights), `c` is `MR × NR` row-major.
pub trait MicroKernel: Copy + Send + Sync {
    /// Tokens per tile.
    const MR: usize;
    /// Output features per tile (the weight panel width).
    const NR: usize;
    /// Deepest `k` slice: `KC × NR` weights fit in L1 with room for `a`.
    const KC: usize;
    /// Rows per block: `MC × KC` activations fit in L2. A multiple of `MR`.
    const MC: usize;
    /// Multiply one tile; `accumulate` adds to `c` instead of overwriting it.
    fn tile(self, rows: usize, kc: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool);
    /// [`MicroKernel::tile`] on half-precision weights, widened to f32 as they load.
    fn tile_f16(
        self,
        rows: usize,
        kc: usize,
        a: &[f32],
        b: &[half::f16],
        c: &mut [f32],
        accumulate: bool,
    );
}

/// Call `$kernel::<R>$args` with `R = $rows` as a constant, for each
/// `R` in the list: the micro-kernels are generic over their row count so
/// every partial tile gets fully unrolled code.
macro_rules! by_rows {
    ($rows:expr, $kernel:ident $args:tt, [$($r:literal),*]) => {
        match $rows {
            $($r => $kernel::<$r> $args,)*
            rows => unreachable!("{rows} rows in a micro-tile"),
        }
    };
}

/// The two [`MicroKernel`] methods of a SIMD kernel type, for tiles of the
/// listed row counts: each dispatches to the `tile` / `tile_f16` functions
/// [`simd_tile`] made. Only a checked proof type (the `detect`ed ISA) may
/// invoke it, which is what makes the unsafe calls sound.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_methods {
    ([$($r:literal),*]) => {
        fn tile(self, rows: usize, kc: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool) {
            // SAFETY: `self` exists only where `detect` found the features `tile` enables.
            unsafe { by_rows!(rows, tile(kc, a, b, c, accumulate), [$($r),*]) }
        }

        fn tile_f16(
            self,
            rows: usize,
            kc: usize,
            a: &[f32],
            b: &[half::f16],
            c: &mut [f32],
            accumulate: bool,
        ) {
            // SAFETY: as in `tile`, for the features `tile_f16` enables.
            unsafe { by_rows!(rows, tile_f16(kc, a, b, c, accumulate), [$($r),*]) }
        }
    };
}

/// The body of a SIMD micro-kernel, `$name::<R>(kc, a, b, c, accumulate)`,
/// for one instruction set and weight format: `R × NR/LANES` accumulator
/// registers; per `k` step, load (and widen) the `NR/LANES` weight vectors
/// once, then broadcast each of the `R` tokens' inputs and FMA. The ISAs and
/// formats differ only in these names.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_tile {
    (
        name: $name:ident, weight: $weight:ty, load_weights: $wload:path,
        feature: $feature:literal, lanes: $lanes:expr, mr: $mr:expr, nr: $nr:expr,
        zero: $zero:path, splat: $splat:path, load: $load:path, store: $store:path,
        fma: $fma:path, add: $add:path $(,)?
    ) => {
        /// One tile of `R ≤ MR` rows (see [`super::MicroKernel::tile`]).
        ///
        /// # Safety
        /// The CPU must support the enabled features.
        #[target_feature(enable = $feature)]
        unsafe fn $name<const R: usize>(
            kc: usize,
            a: &[f32],
            b: &[$weight],
            c: &mut [f32],
            accumulate: bool,
        ) {
            const VECTORS: usize = $nr / $lanes;
            assert!(R <= $mr && a.len() >= kc * $mr && b.len() >= kc * $nr && c.len() >= R * $nr);
            // SAFETY: the reads stay below `kc·MR` in `a` and `kc·NR` in `b`,
            // the writes below `R·NR` in `c`, all checked just above; the
            // unaligned load/store intrinsics need no alignment.
            unsafe {
                let mut acc = [[$zero(); VECTORS]; R];
                let (ap, bp) = (a.as_ptr(), b.as_ptr());
                for i in 0..kc {
                    let mut w = [$zero(); VECTORS];
                    for (j, w) in w.iter_mut().enumerate() {
                        *w = $wload(bp.add(i * $nr + j * $lanes));
                    }
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = $splat(*ap.add(i * $mr + r));
                        for (acc, w) in acc.iter_mut().zip(&w) {
                            *acc = $fma(x, *w, *acc);
                        }
                    }
                }
                let cp = c.as_mut_ptr();
                for (r, acc) in acc.iter().enumerate() {
                    for (j, acc) in acc.iter().enumerate() {
                        let out = cp.add(r * $nr + j * $lanes);
                        let sum = if accumulate {
                            $add(*acc, $load(out))
                        } else {
                            *acc
                        };
                        $store(out, sum);
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

/// A weight matrix `(n, k)` (as stored: one row per output feature), packed
/// for one [`Isa`]'s micro-kernel: `⌈n / NR⌉` panels of `k × NR` values,
/// the last padded with zero columns, in the chosen [`Weights`] format.
pub struct PackedWeight {
    data: Panels,
    n: usize,
    k: usize,
    nr: usize,
    isa: Isa,
}

/// The packed values, in one of the [`Weights`] formats.
enum Panels {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

/// Pack row-major `(n, k)` weights into panels of `nr` outputs, `k`-major.
fn pack<W: Element>(w: &[f32], n: usize, k: usize, nr: usize) -> Vec<W> {
    let panels = n.div_ceil(nr);
    let mut data = vec![W::default(); panels * k * nr];
    data.par_chunks_mut(k * nr)
        .enumerate()
        .for_each(|(p, panel)| {
            for c in 0..nr.min(n - p * nr) {
                let row = &w[(p * nr + c) * k..][..k];
                for (i, v) in row.iter().enumerate() {
                    panel[i * nr + c] = W::from_f32(*v);
                }
            }
        });
    data
}

impl PackedWeight {
    /// Pack `w`, row-major `(n, k)`, for `isa`, stored as `weights`.
    pub fn new(isa: Isa, weights: Weights, w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight is not {n}x{k}");
        let nr = isa.panel_width();
        let data = match weights {
            Weights::F32 => Panels::F32(pack(w, n, k, nr)),
            Weights::F16 => Panels::F16(pack(w, n, k, nr)),
        };
        Self {
            data,
            n,
            k,
            nr,
            isa,
        }
    }

    /// Output features.
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.k
    }

    /// The kernels this weight was packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }
}

/// Scheduling tasks per pool thread: enough for work stealing to even out
/// uneven tasks, few enough that each still reuses its blocks.
const TASKS_PER_THREAD: usize = 4;

/// `x · Wᵀ` for `x` row-major `(m, k)`; returns the `(m, n)` product with
/// `finish(row_index, row)` applied to every output row (in parallel, once
/// each), so bias, activation and normalisation cost no extra pass.
pub fn gemm<F>(x: &[f32], w: &PackedWeight, finish: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    match &w.data {
        Panels::F32(b) => on_isa(x, w, b, finish),
        Panels::F16(b) => on_isa(x, w, b, finish),
    }
}

/// [`gemm`] on the weights' values `b`, with the kernel they were packed for.
fn on_isa<W: Element, F>(x: &[f32], w: &PackedWeight, b: &[W], finish: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    match w.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(kernel) => blocked(kernel, x, w, b, finish),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(kernel) => blocked(kernel, x, w, b, finish),
        Isa::Portable => blocked(portable::Portable, x, w, b, finish),
    }
}

/// The blocking driver, shared by every ISA and weight format.
fn blocked<K: MicroKernel, W: Element, F>(
    kernel: K,
    x: &[f32],
    w: &PackedWeight,
    data: &[W],
    finish: F,
) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let (n, k) = (w.n, w.k);
    assert_eq!(w.nr, K::NR, "weight packed for another kernel");
    assert_eq!(x.len() % k, 0, "input is not a multiple of {k} wide");
    let m = x.len() / k;
    let mut out = vec![0f32; m * n];
    if m == 0 {
        return out;
    }
    let (mr, nr) = (K::MR, K::NR);
    let tiles = m.div_ceil(mr);
    let panels = n.div_ceil(nr);
    let (mut a, mut c) = SCRATCH.with_borrow_mut(std::mem::take);

    // Activations: tile t holds rows t·MR.. as `k × MR`. Rows past m are
    // never read: a last partial tile runs a kernel of fewer rows.
    a.resize(tiles * k * mr, 0.0);
    a.par_chunks_mut(k * mr).enumerate().for_each(|(t, tile)| {
        for r in 0..mr.min(m - t * mr) {
            let row = &x[(t * mr + r) * k..][..k];
            for (i, v) in row.iter().enumerate() {
                tile[i * mr + r] = *v;
            }
        }
    });

    // Equal k slices of at most KC.
    let kc = k.div_ceil(k.div_ceil(K::KC));
    let padded_rows = tiles * mr;
    let row_blocks = padded_rows.div_ceil(K::MC);
    let wanted = TASKS_PER_THREAD * rayon::current_num_threads();
    let panels_per_task = panels.div_ceil(wanted.div_ceil(row_blocks).min(panels));

    // Scratch: row block after row block; inside one, panel after panel,
    // each `rows × NR`, so every task owns one contiguous range.
    c.resize(padded_rows * panels * nr, 0.0);
    c.par_chunks_mut(K::MC * panels * nr)
        .enumerate()
        .for_each(|(block, c)| {
            let rows = c.len() / (panels * nr);
            let first_tile = block * K::MC / mr;
            c.par_chunks_mut(rows * nr * panels_per_task)
                .enumerate()
                .for_each(|(task, c)| {
                    for k0 in (0..k).step_by(kc) {
                        let depth = kc.min(k - k0);
                        for (p, c) in c.chunks_exact_mut(rows * nr).enumerate() {
                            let panel = task * panels_per_task + p;
                            let b = &data[(panel * k + k0) * nr..][..depth * nr];
                            for (t, c) in c.chunks_exact_mut(mr * nr).enumerate() {
                                let tile = first_tile + t;
                                let a = &a[(tile * k + k0) * mr..][..depth * mr];
                                let live = mr.min(m - tile * mr);
                                W::tile(kernel, live, depth, a, b, c, k0 > 0);
                            }
                        }
                    }
                });
        });

    // Gather each row out of the blocked scratch and finish it.
    out.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
        let (block, within) = (r / K::MC, r % K::MC);
        let rows = K::MC.min(padded_rows - block * K::MC);
        let base = block * K::MC * panels * nr + within * nr;
        for (p, dst) in row.chunks_mut(nr).enumerate() {
            dst.copy_from_slice(&c[base + p * rows * nr..][..dst.len()]);
        }
        finish(r, row);
    });
    SCRATCH.set((a, c));
    out
}

thread_local! {
    /// The packed activations and the blocked products of [`blocked`], kept
    /// between calls on a thread: fresh buffers of up to 8 MB cost a memset
    /// and a page fault per 4 KB on every call. Every value read from them
    /// is written first in the same call (the first `k` slice overwrites).
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path this CPU can run.
    fn available() -> Vec<Isa> {
        [Kernels::Avx512, Kernels::Avx2, Kernels::Portable]
            .into_iter()
            .filter_map(|k| k.resolve().ok())
            .collect()
    }

    /// Deterministic values in [-1, 1) (no rand in this crate's tests).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn gemm_matches_a_naive_product_on_odd_shapes() {
        let shapes = [
            (1, 1, 1),
            (1, 384, 1152),
            (5, 7, 3),
            (13, 384, 384),
            (17, 1536, 384),
            (33, 100, 33),
            (145, 257, 47),
            (300, 384, 96),
        ];
        for (isa, weights) in available()
            .into_iter()
            .flat_map(|isa| [(isa, Weights::F32), (isa, Weights::F16)])
        {
            for (m, k, n) in shapes {
                let x = values(m * k, (m * 31 + k) as u64);
                let mut w = values(n * k, (n * 17 + k) as u64);
                let packed = PackedWeight::new(isa, weights, &w, n, k);
                if weights == Weights::F16 {
                    // The product must be exact on the rounded weights.
                    w.iter_mut()
                        .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
                }
                let got = gemm(&x, &packed, |r, row| row[0] += r as f32);
                for r in 0..m {
                    for c in 0..n {
                        let want: f64 = (0..k)
                            .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                            .sum::<f64>()
                            + if c == 0 { r as f64 } else { 0.0 };
                        let g = got[r * n + c] as f64;
                        assert!(
                            (g - want).abs() <= 1e-4 * (k as f64).sqrt().max(1.0),
                            "{} {weights:?} {m}x{k}x{n} [{r},{c}]: {g} != {want}",
                            isa.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn auto_picks_a_path_and_portable_always_runs() {
        assert!(Kernels::Auto.resolve().is_ok());
        assert_eq!(Kernels::Portable.resolve().unwrap().name(), "portable");
        let forced = [Kernels::Avx512, Kernels::Avx2];
        for k in forced {
            if let Err(e) = k.resolve() {
                assert!(e.contains("this CPU lacks"), "{e}");
            }
        }
    }
}
