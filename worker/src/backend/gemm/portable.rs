//! The portable micro-kernel: 6 tokens × 8 outputs in plain Rust, written so
//! the compiler keeps the accumulators in vector registers of whatever the
//! target has (SSE2 on any x86-64, NEON on aarch64; 12 accumulators of 4
//! lanes fit SSE2's 16 registers with room for the weights): the fallback where
//! neither SIMD kernel runs, and a third path to check them against.

use super::{Element, MicroKernel};

/// The portable kernels (no CPU features needed).
#[derive(Debug, Clone, Copy)]
pub struct Portable;

const MR: usize = 6;
const NR: usize = 8;

impl MicroKernel for Portable {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 256;
    const MC: usize = 144;

    fn tile(self, rows: usize, kc: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool) {
        by_rows!(rows, tile(kc, a, b, c, accumulate), [1, 2, 3, 4, 5, 6])
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
        by_rows!(rows, tile(kc, a, b, c, accumulate), [1, 2, 3, 4, 5, 6])
    }
}

fn tile<const R: usize>(kc: usize, a: &[f32], b: &[impl Element], c: &mut [f32], accumulate: bool) {
    let mut acc = [[0f32; NR]; R];
    for (x, w) in a[..kc * MR]
        .chunks_exact(MR)
        .zip(b[..kc * NR].chunks_exact(NR))
    {
        let w: [f32; NR] = std::array::from_fn(|j| w[j].to_f32());
        for (acc, x) in acc.iter_mut().zip(x) {
            for (acc, w) in acc.iter_mut().zip(&w) {
                *acc += x * w;
            }
        }
    }
    for (c, acc) in c.chunks_exact_mut(NR).zip(&acc) {
        for (c, acc) in c.iter_mut().zip(acc) {
            *c = if accumulate { *c + acc } else { *acc };
        }
    }
}
