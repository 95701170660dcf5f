//! Fused CPU kernels for the fast backend, as candle custom ops.
//!
//! Profiling the encoder showed a third of the time outside the matmuls:
//! scalar `erff` in GELU, and one full pass over memory (plus a fresh
//! allocation) per bias add, residual add and layer norm. These kernels do
//! each chain in one pass over a row, with branch-free maths the compiler
//! vectorises, rows split over the compute pool.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, WithDType};
use half::f16;
use rayon::prelude::*;

/// Rows per parallel task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// `erf(x)` as a rational polynomial on `[-4, 4]` (the form Eigen and XLA
/// use for f32): branch-free, vectorisable, within 1e-6 of the exact value.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_4e-3;
    q = x2 * q + -1.426_474e-2;
    x * p / q
}

/// Exact-form GELU, `x·Φ(x)`, as BERT's `hidden_act = "gelu"`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The elements of a contiguous input; f32 activations, or f16 packed weights.
fn contiguous<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("fused kernel needs a contiguous input"),
    }
}

/// `gelu(x + bias)` over rows of `bias.len()` values.
pub struct BiasGelu {
    /// One value per column.
    pub bias: Vec<f32>,
}

impl CustomOp1 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x: &[f32] = contiguous(storage, layout)?;
        let cols = self.bias.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(cols * ROWS_PER_TASK)
            .zip(x.par_chunks(cols * ROWS_PER_TASK))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(cols).zip(x.chunks(cols)) {
                    for ((o, x), b) in o.iter_mut().zip(x).zip(&self.bias) {
                        *o = gelu(x + b);
                    }
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `layer_norm(x + bias + residual)`: the end of every BERT sub-layer, in one pass.
pub struct BiasResidualNorm {
    /// Bias of the projection that produced `x`.
    pub bias: Vec<f32>,
    /// Layer-norm scale.
    pub gamma: Vec<f32>,
    /// Layer-norm shift.
    pub beta: Vec<f32>,
    /// Layer-norm epsilon.
    pub eps: f32,
}

impl BiasResidualNorm {
    fn row(&self, out: &mut [f32], x: &[f32], residual: &[f32]) {
        let n = out.len() as f32;
        for ((o, x), (r, b)) in out.iter_mut().zip(x).zip(residual.iter().zip(&self.bias)) {
            *o = x + r + b;
        }
        let mean = out.iter().sum::<f32>() / n;
        let var = out.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((o, g), b) in out.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *o = (*o - mean) * inv * g + b;
        }
    }
}

impl CustomOp2 for BiasResidualNorm {
    fn name(&self) -> &'static str {
        "bias-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x: &[f32] = contiguous(s1, l1)?;
        let residual: &[f32] = contiguous(s2, l2)?;
        if x.len() != residual.len() {
            candle_core::bail!("residual shape {:?} != {:?}", l2.shape(), l1.shape());
        }
        let cols = self.bias.len();
        let mut out = vec![0f32; x.len()];
        let block = cols * ROWS_PER_TASK;
        out.par_chunks_mut(block)
            .zip(x.par_chunks(block).zip(residual.par_chunks(block)))
            .for_each(|(o, (x, r))| {
                for ((o, x), r) in o.chunks_mut(cols).zip(x.chunks(cols)).zip(r.chunks(cols)) {
                    self.row(o, x, r);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series (double precision), for checking.
    fn erf_exact(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum() * (1.0 - 1.6e-8);
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 || n < 5.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_1e_6() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f64 / 1000.0;
            worst = worst.max((erf(x as f32) as f64 - erf_exact(x)).abs());
        }
        assert!(worst < 1e-6, "max error {worst}");
    }
}

/// Lanes of one AVX-512 register of f32.
const LANES: usize = 16;
/// Output features per micro-tile (two registers).
pub const BLOCK: usize = 2 * LANES;
/// Tokens per micro-tile (16 accumulators: half the AVX-512 registers).
const TOKENS_PER_TILE: usize = 8;
/// Output blocks per parallel task.
const BLOCKS_PER_TASK: usize = 4;

/// Pack a weight `(n, k)` (row-major f32, `n` a multiple of [`BLOCK`]) for
/// [`SmallMatmul`]: f16, laid out `(n / BLOCK, k, BLOCK)`, so the kernel
/// streams it front to back.
pub fn pack_weight(w: &[f32], n: usize, k: usize) -> Vec<f16> {
    let mut packed = vec![f16::ZERO; n * k];
    for b in 0..n / BLOCK {
        for i in 0..k {
            for c in 0..BLOCK {
                packed[(b * k + i) * BLOCK + c] = f16::from_f32(w[(b * BLOCK + c) * k + i]);
            }
        }
    }
    packed
}

/// `x · Wᵀ` for few rows: `x` is `(m, k)` f32, `W` a weight packed by
/// [`pack_weight`] (shape `(n / BLOCK, k, BLOCK)`, f16); the result is `(m, n)` f32.
///
/// gemm repacks the whole weight matrix on every call, which for a single
/// sentence (m ≈ 16 tokens) costs more than the multiply; and a single
/// sentence is bound by streaming the weights (42 MB in f32, more than the
/// L3 cache) rather than by arithmetic. Here the weights are packed once, in
/// f16 (half the bytes: they stay in cache), widened to f32 in registers, and
/// multiplied in 8-token × 32-output tiles of AVX-512 FMAs with f32
/// accumulation and no horizontal sums (see [`small_matmul_supported`]; other
/// CPUs use gemm).
pub struct SmallMatmul;

impl CustomOp2 for SmallMatmul {
    fn name(&self) -> &'static str {
        "small-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x: &[f32] = contiguous(s1, l1)?;
        let w: &[f16] = contiguous(s2, l2)?;
        let (m, k) = l1.shape().dims2()?;
        let (blocks, k2, block) = l2.shape().dims3()?;
        if k != k2 || block != BLOCK {
            candle_core::bail!("small matmul: {m}x{k} by packed {blocks}x{k2}x{block}");
        }
        let n = blocks * BLOCK;
        let tasks: Vec<Vec<f32>> = w
            .par_chunks(BLOCKS_PER_TASK * k * BLOCK)
            .map(|w| {
                let cols = w.len() / k;
                let mut out = vec![0f32; m * cols];
                multiply(x, w, k, &mut out);
                out
            })
            .collect();
        let mut out = vec![0f32; m * n];
        for (task, part) in tasks.iter().enumerate() {
            let cols = part.len() / m;
            let first = task * BLOCKS_PER_TASK * BLOCK;
            for t in 0..m {
                out[t * n + first..t * n + first + cols]
                    .copy_from_slice(&part[t * cols..(t + 1) * cols]);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// Whether [`SmallMatmul`] can run here: it is written for AVX-512.
pub fn small_matmul_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out (m, cols) = x (m, k) · packed blocks`, one task's share.
fn multiply(x: &[f32], w: &[f16], k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above; the kernel
        // reads `x` and `w` and writes `out` within their lengths (see `tile`).
        return unsafe { multiply_avx512(x, w, k, out) };
    }
    let cols = w.len() / k;
    for (t, xt) in x.chunks_exact(k).enumerate() {
        for c in 0..cols {
            let (b, lane) = (c / BLOCK, c % BLOCK);
            out[t * cols + c] = (0..k)
                .map(|i| xt[i] * w[(b * k + i) * BLOCK + lane].to_f32())
                .sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn multiply_avx512(x: &[f32], w: &[f16], k: usize, out: &mut [f32]) {
    let tokens = x.len() / k;
    let cols = w.len() / k;
    for b in 0..cols / BLOCK {
        let mut t = 0;
        while t < tokens {
            let left = tokens - t;
            match left {
                1 => tile::<1>(x, w, k, b, t, cols, out),
                2 => tile::<2>(x, w, k, b, t, cols, out),
                3 => tile::<3>(x, w, k, b, t, cols, out),
                4 => tile::<4>(x, w, k, b, t, cols, out),
                5 => tile::<5>(x, w, k, b, t, cols, out),
                6 => tile::<6>(x, w, k, b, t, cols, out),
                7 => tile::<7>(x, w, k, b, t, cols, out),
                _ => tile::<TOKENS_PER_TILE>(x, w, k, b, t, cols, out),
            }
            t += left.min(TOKENS_PER_TILE);
        }
    }
}

/// Tokens `t..t+T` × outputs of block `b`: broadcast each token's input,
/// FMA it with the block's two weight vectors, store the sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const T: usize>(
    x: &[f32],
    w: &[f16],
    k: usize,
    b: usize,
    t: usize,
    cols: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!((t + T) * k <= x.len() && (b + 1) * k * BLOCK <= w.len());
    assert!((t + T - 1) * cols + (b + 1) * BLOCK <= out.len());
    let mut acc = [[_mm512_setzero_ps(); 2]; T];
    let wp = w.as_ptr().add(b * k * BLOCK) as *const __m256i;
    let xp = x.as_ptr().add(t * k);
    for i in 0..k {
        let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(2 * i)));
        let w1 = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(2 * i + 1)));
        for (j, a) in acc.iter_mut().enumerate() {
            let xv = _mm512_set1_ps(*xp.add(j * k + i));
            a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
            a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
        }
    }
    for (j, a) in acc.iter().enumerate() {
        let o = out.as_mut_ptr().add((t + j) * cols + b * BLOCK);
        _mm512_storeu_ps(o, a[0]);
        _mm512_storeu_ps(o.add(LANES), a[1]);
    }
}

#[cfg(test)]
mod matmul_tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn small_matmul_equals_candle_matmul() {
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 384, 1152), (7, 384, 384), (13, 1536, 384), (6, 20, 64)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            // Weights exactly representable in f16, so only summation order differs.
            let w32 = Tensor::randn(0f32, 1.0, (n, k), &dev)
                .unwrap()
                .to_dtype(candle_core::DType::F16)
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap();
            let packed = pack_weight(&w32.flatten_all().unwrap().to_vec1().unwrap(), n, k);
            let w = Tensor::from_vec(packed, (n / BLOCK, k, BLOCK), &dev).unwrap();
            let want = x.matmul(&w32.t().unwrap()).unwrap();
            let got = x.apply_op2_no_bwd(&w, &SmallMatmul).unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-3, "{m}x{k}x{n}: max diff {diff}");
        }
    }
}
