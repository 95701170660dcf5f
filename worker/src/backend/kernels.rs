//! The fast backend's dense layers as candle custom ops: the packed GEMM
//! ([`super::gemm`]) with its bias, GELU, residual and layer norm fused in.
//!
//! Profiling the encoder showed a third of the time outside the matmuls:
//! scalar `erff` in GELU, and one full pass over memory (plus a fresh
//! allocation) per bias add, residual add and layer norm. Here each chain
//! runs on one output row while it is in L1, right after the GEMM gathers it,
//! with branch-free maths the compiler vectorises.

use super::gemm::{gemm, Isa, PackedWeight, Weights};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

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

/// The elements of a contiguous f32 input.
pub(super) fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("fused kernel needs a contiguous input"),
    }
}

/// A dense layer, `x · Wᵀ + b`, with `W` packed for the chosen kernels.
pub struct Linear {
    weight: PackedWeight,
    bias: Vec<f32>,
}

impl Linear {
    /// Pack `weight` (`(out, in)`, as stored) and keep `bias` (`out`).
    pub fn new(isa: Isa, weights: Weights, weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let bias = bias.to_vec1::<f32>()?;
        if bias.len() != n {
            candle_core::bail!("bias of {} for {n} outputs", bias.len());
        }
        let weight = PackedWeight::new(isa, weights, &weight.flatten_all()?.to_vec1()?, n, k);
        Ok(Self { weight, bias })
    }

    /// The product of the `(m, in)` input in `storage`, each output row
    /// biased and then handed to `finish(row_index, row)`.
    fn run<F>(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        finish: F,
    ) -> Result<(CpuStorage, Shape)>
    where
        F: Fn(usize, &mut [f32]) + Sync,
    {
        let x = contiguous(storage, layout)?;
        let (m, k) = layout.shape().dims2()?;
        if k != self.weight.inputs() {
            candle_core::bail!("linear: {m}x{k} input for {} inputs", self.weight.inputs());
        }
        let out = gemm(x, &self.weight, |r, row| {
            for (o, b) in row.iter_mut().zip(&self.bias) {
                *o += b;
            }
            finish(r, row);
        });
        Ok((
            CpuStorage::F32(out),
            Shape::from((m, self.weight.outputs())),
        ))
    }
}

/// What follows a [`Linear`] in a [`Project`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Nothing (the QKV projection).
    Identity,
    /// Exact-form GELU (the feed-forward up-projection).
    Gelu,
}

/// `act(x · Wᵀ + b)` as a candle op on a `(tokens, in)` tensor.
pub struct Project<'a> {
    /// The layer.
    pub linear: &'a Linear,
    /// Applied to every output.
    pub activation: Activation,
}

impl CustomOp1 for Project<'_> {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        self.linear.run(storage, layout, |_, row| {
            if self.activation == Activation::Gelu {
                row.iter_mut().for_each(|v| *v = gelu(*v));
            }
        })
    }
}

/// Layer norm parameters.
pub struct LayerNorm {
    /// Scale.
    pub gamma: Vec<f32>,
    /// Shift.
    pub beta: Vec<f32>,
    /// Epsilon.
    pub eps: f32,
}

impl LayerNorm {
    /// `row = layer_norm(row + residual)`.
    fn residual_row(&self, row: &mut [f32], residual: &[f32]) {
        let n = row.len() as f32;
        for (o, r) in row.iter_mut().zip(residual) {
            *o += r;
        }
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((o, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *o = (*o - mean) * inv * g + b;
        }
    }
}

/// `layer_norm(x · Wᵀ + b + residual)`, the end of every BERT sub-layer, as
/// a candle op on (`x`, `residual`).
pub struct ProjectNorm<'a> {
    /// The sub-layer's output projection.
    pub linear: &'a Linear,
    /// The norm after the residual.
    pub norm: &'a LayerNorm,
}

impl CustomOp2 for ProjectNorm<'_> {
    fn name(&self) -> &'static str {
        "linear-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let residual = contiguous(s2, l2)?;
        let (m, n) = l2.shape().dims2()?;
        if m != l1.shape().dims2()?.0 || n != self.linear.weight.outputs() {
            candle_core::bail!("residual {:?} for input {:?}", l2.shape(), l1.shape());
        }
        self.linear.run(s1, l1, |r, row| {
            self.norm.residual_row(row, &residual[r * n..][..n]);
        })
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
