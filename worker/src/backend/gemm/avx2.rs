//! The AVX2 + FMA micro-kernel: 6 tokens × 16 outputs, 12 of the 16 `ymm`
//! registers accumulating, 2 holding weights, 1 the broadcast input.

use super::MicroKernel;
use std::arch::x86_64::*;

/// Proof that this CPU has AVX2 and FMA: only [`Avx2::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub struct Avx2(());

impl Avx2 {
    /// `Some` where the CPU supports AVX2 and FMA.
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Self(()))
    }
}

impl MicroKernel for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    /// 256 × 16 weights: 16 KB of a 32 KB L1.
    const KC: usize = 256;
    /// 144 × 256 activations: 144 KB of a ≥ 512 KB L2.
    const MC: usize = 144;

    fn tile(self, rows: usize, kc: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool) {
        // SAFETY: an `Avx2` exists only where `detect` found AVX2 and FMA.
        unsafe { by_rows!(rows, tile(kc, a, b, c, accumulate), [1, 2, 3, 4, 5, 6]) }
    }
}

simd_tile! {
    feature: "avx2,fma", lanes: 8, mr: 6, nr: 16,
    zero: _mm256_setzero_ps, splat: _mm256_set1_ps, load: _mm256_loadu_ps,
    store: _mm256_storeu_ps, fma: _mm256_fmadd_ps, add: _mm256_add_ps,
}
