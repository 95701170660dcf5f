//! The AVX-512F micro-kernel: 12 tokens × 32 outputs, 24 of the 32 `zmm`
//! registers accumulating, 2 holding weights, 1 the broadcast input.

use super::MicroKernel;
use std::arch::x86_64::*;

/// Proof that this CPU has AVX-512F: only [`Avx512::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub struct Avx512(());

impl Avx512 {
    /// `Some` where the CPU supports AVX-512F.
    pub fn detect() -> Option<Self> {
        is_x86_feature_detected!("avx512f").then_some(Self(()))
    }
}

impl MicroKernel for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    /// 192 × 32 weights: 24 KB of a 32–48 KB L1.
    const KC: usize = 192;
    /// 144 × 192 activations: 108 KB of a ≥ 1 MB L2.
    const MC: usize = 144;

    fn tile(self, rows: usize, kc: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool) {
        // SAFETY: an `Avx512` exists only where `detect` found AVX-512F.
        unsafe {
            by_rows!(
                rows,
                tile(kc, a, b, c, accumulate),
                [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
            )
        }
    }
}

simd_tile! {
    feature: "avx512f", lanes: 16, mr: 12, nr: 32,
    zero: _mm512_setzero_ps, splat: _mm512_set1_ps, load: _mm512_loadu_ps,
    store: _mm512_storeu_ps, fma: _mm512_fmadd_ps, add: _mm512_add_ps,
}
