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

    simd_methods!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
}

/// Sixteen half-precision weights at `p`, widened to f32.
///
/// # Safety
/// The CPU must have AVX-512F and `p` must be readable for 32 bytes.
#[target_feature(enable = "avx512f")]
unsafe fn load_f16(p: *const half::f16) -> __m512 {
    // SAFETY: the caller's promise; the unaligned load needs no alignment.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
}

simd_tile! {
    name: tile, weight: f32, load_weights: _mm512_loadu_ps,
    feature: "avx512f", lanes: 16, mr: 12, nr: 32,
    zero: _mm512_setzero_ps, splat: _mm512_set1_ps, load: _mm512_loadu_ps,
    store: _mm512_storeu_ps, fma: _mm512_fmadd_ps, add: _mm512_add_ps,
}

simd_tile! {
    name: tile_f16, weight: half::f16, load_weights: load_f16,
    feature: "avx512f", lanes: 16, mr: 12, nr: 32,
    zero: _mm512_setzero_ps, splat: _mm512_set1_ps, load: _mm512_loadu_ps,
    store: _mm512_storeu_ps, fma: _mm512_fmadd_ps, add: _mm512_add_ps,
}
