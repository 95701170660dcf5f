//! Multi-head self-attention over the packed token rows of a batch, as one
//! candle op that reads the fused QKV projection and writes the context.
//!
//! With candle's tensor ops it took, per layer and per length group, three
//! strided copies (q, k and v to `(texts, heads, len, head_dim)`), two batched
//! matmuls of tiny matrices, a scale and a softmax: serial on the calling
//! thread while the pool's other threads waited, and every matmul asked
//! candle for its thread count, which on x86 Linux re-reads `/proc/cpuinfo`
//! each time (3.6 % of a batch-8 profile was the kernel's `show_cpuinfo`;
//! a lone sentence ran 12 % faster with that lookup avoided). Here every
//! (text, head) pair is one task of the rayon pool: it reads its queries,
//! keys and values straight from the QKV rows and writes its own columns of
//! the context rows, in one pass with nothing copied.

use super::gemm::Isa;
use super::kernels::contiguous;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

/// Consecutive texts of one token length, in the packed matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// First token row.
    pub start: usize,
    /// Texts in the group.
    pub texts: usize,
    /// Tokens per text.
    pub len: usize,
}

/// Self-attention as a candle op on the `(tokens, 3·hidden)` QKV rows
/// (each row `q | k | v`, each of them `heads × head_dim`), giving the
/// `(tokens, hidden)` context. No mask: a text attends to its own tokens,
/// which [`Group`]s delimit.
pub struct SelfAttention<'a> {
    /// The texts of the batch, by length.
    pub groups: &'a [Group],
    /// Attention heads.
    pub heads: usize,
    /// The kernels chosen (`KERNELS`): portable ones run the portable build.
    pub isa: Isa,
}

impl CustomOp1 for SelfAttention<'_> {
    fn name(&self) -> &'static str {
        "self-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous(storage, layout)?;
        let (tokens, width) = layout.shape().dims2()?;
        let hidden = width / 3;
        if width % 3 != 0 || self.heads == 0 || hidden % self.heads != 0 {
            candle_core::bail!("attention: rows of {width} for {} heads", self.heads);
        }
        // Groups in order, apart and inside the rows: each job then writes
        // rows no other job writes (see `attend`).
        let mut end = 0;
        for g in self.groups {
            if g.start < end || g.start + g.texts * g.len > tokens {
                candle_core::bail!(
                    "attention: group {g:?} overlaps another or ends past {tokens} tokens"
                );
            }
            end = g.start + g.texts * g.len;
        }
        let out = attend(qkv, hidden, self.heads, self.groups, self.isa);
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }
}

/// The context rows of `qkv` (`tokens × 3·hidden`): for every text of
/// `groups` (in order, apart, inside the rows: [`SelfAttention`] checks) and
/// every head, `softmax(q·kᵀ / √head_dim) · v`, each job built for AVX2 + FMA
/// unless `isa` is the portable one (or the CPU lacks them). Rows outside
/// every group stay zero.
fn attend(qkv: &[f32], hidden: usize, heads: usize, groups: &[Group], isa: Isa) -> Vec<f32> {
    let head_dim = hidden / heads;
    let mut out = vec![0f32; qkv.len() / (3 * hidden) * hidden];
    let jobs: Vec<(usize, usize, usize)> = groups
        .iter()
        .flat_map(|g| (0..g.texts).map(move |t| (g.start + t * g.len, g.len)))
        .flat_map(|(first, len)| (0..heads).map(move |h| (first, len, h)))
        .collect();
    let work = Heads {
        qkv,
        hidden,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        context: Columns(out.as_mut_ptr()),
    };
    let simd = isa.avx2_fma();
    jobs.par_iter().for_each(|&(first, len, h)| {
        if simd {
            // SAFETY: the CPU has AVX2 and FMA (`Isa::avx2_fma`).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                work.one_avx2(first, len, h)
            }
        } else {
            work.one(first, len, h)
        }
    });
    out
}

/// What every job reads, and the context they write.
struct Heads<'a> {
    qkv: &'a [f32],
    hidden: usize,
    head_dim: usize,
    scale: f32,
    context: Columns,
}

impl Heads<'_> {
    /// Head `h` of the text of `len` tokens from row `first`.
    #[inline(always)]
    fn one(&self, first: usize, len: usize, h: usize) {
        let (hidden, head_dim) = (self.hidden, self.head_dim);
        let column = h * head_dim;
        let row = |i: usize, part: usize| {
            &self.qkv[(first + i) * 3 * hidden + part * hidden + column..][..head_dim]
        };
        // Taken out for the loop, so the loop is compiled here (with this
        // job's target features), not inside `LocalKey::with`.
        let mut scores = SCORES.take();
        scores.resize(len, 0.0);
        for i in 0..len {
            let q = row(i, 0);
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot(q, row(j, 1)) * self.scale;
                max = max.max(*s);
            }
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv = 1.0 / sum;
            // SAFETY: this job alone writes columns `column..+head_dim`
            // of the rows of its text, and the buffer outlives the jobs.
            let ctx = unsafe { self.context.slice((first + i) * hidden + column, head_dim) };
            ctx.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let p = p * inv;
                for (c, v) in ctx.iter_mut().zip(row(j, 2)) {
                    *c += p * v;
                }
            }
        }
        SCORES.set(scores);
    }

    /// [`Heads::one`] compiled for AVX2 + FMA: 8-wide dot products and sums.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn one_avx2(&self, first: usize, len: usize, h: usize) {
        self.one(first, len, h)
    }
}

/// `a · b` in eight independent lanes, so the compiler vectorises it.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    for (a, b) in a8.iter().zip(b8) {
        for l in 0..8 {
            lanes[l] += a[l] * b[l];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + tail
}

/// The context buffer, shared by the jobs that each write disjoint columns of it.
struct Columns(*mut f32);

// SAFETY: jobs write disjoint ranges only (see `attend`).
unsafe impl Sync for Columns {}

impl Columns {
    /// `len` values from `offset`.
    ///
    /// # Safety
    /// No other live slice may overlap the range, which must lie in the buffer.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, offset: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
    }
}

thread_local! {
    /// One query's scores, kept between jobs on a pool thread.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gemm::Kernels;

    /// The textbook form in f64: scores, softmax, weighted sum.
    fn naive(qkv: &[f32], hidden: usize, heads: usize, g: &Group) -> Vec<Vec<f64>> {
        let (width, d) = (3 * hidden, hidden / heads);
        let at = |row: usize, part: usize, h: usize, x: usize| {
            qkv[row * width + part * hidden + h * d + x] as f64
        };
        let mut rows = Vec::new();
        for t in 0..g.texts {
            let first = g.start + t * g.len;
            for i in 0..g.len {
                let mut row = vec![0.0; hidden];
                for h in 0..heads {
                    let scores: Vec<f64> = (0..g.len)
                        .map(|j| {
                            (0..d)
                                .map(|x| at(first + i, 0, h, x) * at(first + j, 1, h, x))
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let e: Vec<f64> = scores.iter().map(|s| s.exp()).collect();
                    let total: f64 = e.iter().sum();
                    for x in 0..d {
                        row[h * d + x] = (0..g.len)
                            .map(|j| e[j] / total * at(first + j, 2, h, x))
                            .sum();
                    }
                }
                rows.push(row);
            }
        }
        rows
    }

    #[test]
    fn every_text_and_head_matches_the_textbook_form() {
        // head_dim 12: one 8-lane chunk and a tail; texts of 1, 3 and 5
        // tokens; row 0 belongs to no group and must stay zero.
        let (hidden, heads) = (24, 2);
        let groups = [
            Group {
                start: 1,
                texts: 2,
                len: 5,
            },
            Group {
                start: 11,
                texts: 1,
                len: 3,
            },
            Group {
                start: 14,
                texts: 3,
                len: 1,
            },
        ];
        let tokens = 17;
        let qkv: Vec<f32> = (0..tokens * 3 * hidden)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0)
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // Every build this CPU runs: the portable one, and AVX2 + FMA where present.
        let isas: Vec<Isa> = [Kernels::Portable, Kernels::Avx2]
            .into_iter()
            .filter_map(|k| k.resolve().ok())
            .collect();
        for &isa in &isas {
            let out = pool.install(|| attend(&qkv, hidden, heads, &groups, isa));
            assert_eq!(out.len(), tokens * hidden);
            assert!(out[..hidden].iter().all(|&v| v == 0.0), "a row of no text");
            for g in &groups {
                for (r, want) in naive(&qkv, hidden, heads, g).into_iter().enumerate() {
                    let got = &out[(g.start + r) * hidden..][..hidden];
                    for (x, (&got, want)) in got.iter().zip(want).enumerate() {
                        assert!(
                            (got as f64 - want).abs() < 1e-5,
                            "{isa:?}: group {g:?} row {r} column {x}: {got} vs {want}"
                        );
                    }
                }
            }
            // A lone token attends only to itself: its context is its value.
            let v = &qkv[14 * 3 * hidden + 2 * hidden..][..hidden];
            assert_eq!(&out[14 * hidden..][..hidden], v, "{isa:?}");
        }
        // The op refuses groups that overlap or run past the rows.
        let rows = candle_core::Tensor::zeros(
            (4, 3 * hidden),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let run = |groups: &[Group]| {
            rows.apply_op1_no_bwd(&SelfAttention {
                groups,
                heads,
                isa: Isa::Portable,
            })
        };
        let group = |start, len| Group {
            start,
            texts: 1,
            len,
        };
        assert!(run(&[group(0, 2), group(2, 2)]).is_ok());
        assert!(
            run(&[group(0, 3), group(2, 2)]).is_err(),
            "overlapping groups"
        );
        assert!(run(&[group(2, 3)]).is_err(), "past the last row");
    }
}
