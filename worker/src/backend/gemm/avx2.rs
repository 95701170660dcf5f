//! The AVX2 + FMA micro-kernel: 6 tokens × 16 outputs, 12 of the 16 `ymm`
//! registers accumulating, 2 holding weights, 1 the broadcast input.

use super::MicroKernel;
use std::arch::x86_64::*;

/// Proof that this CPU has AVX2, FMA and F16C: only [`Avx2::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub struct Avx2(());

impl Avx2 {
    /// `Some` where the CPU supports AVX2, FMA and F16C (every CPU with the
    /// first two has the third: Intel since Haswell, AMD since Piledriver).
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        .then_some(Self(()))
    }
}

impl MicroKernel for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    /// 256 × 16 weights: 16 KB of a 32 KB L1.
    const KC: usize = 256;
    /// 144 × 256 activations: 144 KB of a ≥ 512 KB L2.
    const MC: usize = 144;

    simd_methods!([1, 2, 3, 4, 5, 6]);
}

/// Eight half-precision weights at `p`, widened to f32.
///
/// # Safety
/// The CPU must have F16C and `p` must be readable for 16 bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16(p: *const half::f16) -> __m256 {
    // SAFETY: the caller's promise; the unaligned load needs no alignment.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
}

simd_tile! {
    name: tile, weight: f32, load_weights: _mm256_loadu_ps,
    feature: "avx2,fma", lanes: 8, mr: 6, nr: 16,
    zero: _mm256_setzero_ps, splat: _mm256_set1_ps, load: _mm256_loadu_ps,
    store: _mm256_storeu_ps, fma: _mm256_fmadd_ps, add: _mm256_add_ps,
}

simd_tile! {
    name: tile_f16, weight: half::f16, load_weights: load_f16,
    feature: "avx2,fma,f16c", lanes: 8, mr: 6, nr: 16,
    zero: _mm256_setzero_ps, splat: _mm256_set1_ps, load: _mm256_loadu_ps,
    store: _mm256_storeu_ps, fma: _mm256_fmadd_ps, add: _mm256_add_ps,
}
