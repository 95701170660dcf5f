//! `worker bench`: raw in-process throughput of the model backends, the
//! serving one against candle's `BertModel` baseline, in one run on one corpus.
//!
//! Each measurement is tokenize → forward → pool → normalise over the whole
//! corpus in chunks of one batch size, after a warm-up, inside a rayon pool of
//! `--threads` threads (the pool a worker computes in). The fast backend
//! runs on the kernels `KERNELS` names (default: the best this CPU has), and
//! the report names them, the CPU, and the smallest cosine between the two
//! backends' embeddings of any text at each batch size. [`images`] measures
//! the image model the same way.

pub mod images;

use crate::backend::fast::FastBert;
use crate::backend::gemm::{Kernels, Weights};
use crate::backend::{self, BackendError, Embedder, Kind};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `worker bench` (with the worker's `--model-dir`, `--threads`).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// JSON list of strings; default: 1024 built-in sentences of 8–20 words.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Batch sizes to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    pub batch_sizes: Vec<usize>,
    /// Print `{"results":[...]}` instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure the image model (`IMAGE_MODEL_DIR`) instead, on the PNG and
    /// JPEG photos in this folder: images/s and ms per image at each batch
    /// size, and the gateway's decode + crop per photo.
    #[arg(long)]
    pub images: Option<PathBuf>,
}

/// One backend at one batch size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Measurement {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Texts embedded per second.
    pub sentences_per_s: f64,
    /// Mean wall time of one batch.
    pub ms_per_batch: f64,
}

/// A row of the report: the serving backend and the baseline at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Serving backend.
    pub sentences_per_s: f64,
    /// Serving backend.
    pub ms_per_batch: f64,
    /// candle `BertModel`.
    pub baseline_sentences_per_s: f64,
    /// candle `BertModel`.
    pub baseline_ms_per_batch: f64,
    /// Smallest cosine between the two backends' embeddings of one text.
    pub min_cosine: f32,
    /// The fast backend's micro-kernels (`avx512`, `avx2`, `portable`).
    pub kernels: &'static str,
    /// How the fast backend stored its weights (`f32`, `f16`).
    pub weights: &'static str,
}

/// Embed `texts` in chunks of `batch` (after one warm-up batch) and time
/// it; also returns the embeddings, in order.
fn measure(model: &dyn Embedder, texts: &[&str], batch: usize) -> Result<Run, BackendError> {
    let batch = batch.max(1);
    model.embed(&texts[..batch.min(texts.len())])?;
    let started = Instant::now();
    let mut embeddings = Vec::with_capacity(texts.len());
    let mut batches = 0;
    for chunk in texts.chunks(batch) {
        embeddings.extend(model.embed(chunk)?);
        batches += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let measured = Measurement {
        batch_size: batch,
        sentences_per_s: texts.len() as f64 / secs,
        ms_per_batch: secs * 1000.0 / batches as f64,
    };
    Ok((measured, embeddings))
}

/// One timed pass over the corpus and the embeddings it produced, in order.
type Run = (Measurement, Vec<Vec<f32>>);

/// `model` at every batch size, computing in a pool of `threads`.
fn run(
    model: &dyn Embedder,
    texts: &[String],
    batch_sizes: &[usize],
    threads: usize,
) -> Result<Vec<Run>, BackendError> {
    let pool = backend::thread::compute_pool(threads)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    pool.install(|| {
        batch_sizes
            .iter()
            .map(|&b| measure(model, &refs, b))
            .collect()
    })
}

/// Measure `kind` at every batch size, computing in a pool of `threads`.
pub fn measure_all(
    kind: Kind,
    model_dir: &Path,
    texts: &[String],
    batch_sizes: &[usize],
    threads: usize,
) -> Result<Vec<Measurement>, BackendError> {
    let model = backend::load(kind, model_dir)?;
    let runs = run(&*model, texts, batch_sizes, threads)?;
    Ok(runs.into_iter().map(|(m, _)| m).collect())
}

/// Both backends, side by side, the fast one on `kernels` (`--kernels` /
/// `KERNELS`) with its weights stored as `weights` (`--weights` / `WEIGHTS`).
pub fn compare(
    model_dir: &Path,
    kernels: Kernels,
    weights: Weights,
    texts: &[String],
    batch_sizes: &[usize],
    threads: usize,
) -> Result<Vec<Row>, BackendError> {
    let fast = FastBert::load(model_dir, kernels, weights)?;
    let isa = fast.isa().name();
    let weights = fast.weights().name();
    let fast = run(&fast, texts, batch_sizes, threads)?;
    let base = backend::load(Kind::Candle, model_dir)?;
    let base = run(&*base, texts, batch_sizes, threads)?;
    Ok(fast
        .iter()
        .zip(&base)
        .map(|((f, fe), (b, be))| Row {
            batch_size: f.batch_size,
            sentences_per_s: f.sentences_per_s,
            ms_per_batch: f.ms_per_batch,
            baseline_sentences_per_s: b.sentences_per_s,
            baseline_ms_per_batch: b.ms_per_batch,
            min_cosine: fe
                .iter()
                .zip(be)
                .map(|(x, y)| x.iter().zip(y).map(|(x, y)| x * y).sum::<f32>())
                .fold(1.0, f32::min),
            kernels: isa,
            weights,
        })
        .collect())
}

/// The CPU's model name and the SIMD features the kernels look for.
pub fn cpu() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split_once(':')?.1.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    #[cfg(target_arch = "x86_64")]
    let features = [
        ("avx512f", is_x86_feature_detected!("avx512f")),
        ("avx2", is_x86_feature_detected!("avx2")),
        ("fma", is_x86_feature_detected!("fma")),
    ]
    .iter()
    .map(|(name, has)| format!("{}{name}", if *has { "+" } else { "-" }))
    .collect::<Vec<_>>()
    .join(" ");
    #[cfg(not(target_arch = "x86_64"))]
    let features = String::new();
    format!("{model} ({features})")
}

/// The human-readable table.
pub fn table(rows: &[Row], texts: usize, threads: usize) -> String {
    let kernels = rows.first().map_or("-", |r| r.kernels);
    let weights = rows.first().map_or("-", |r| r.weights);
    let mut out = format!(
        "{texts} sentences, {threads} thread(s), CPU {}, fast kernels: {kernels}, weights: {weights}\n\
         batch   fast sent/s   ms/batch   candle BertModel sent/s   ms/batch   speed-up   min cosine\n",
        cpu()
    );
    for r in rows {
        out += &format!(
            "{:>5}   {:>11.1}   {:>8.2}   {:>23.1}   {:>8.2}   {:>7.2}x   {:>10.6}\n",
            r.batch_size,
            r.sentences_per_s,
            r.ms_per_batch,
            r.baseline_sentences_per_s,
            r.baseline_ms_per_batch,
            r.sentences_per_s / r.baseline_sentences_per_s,
            r.min_cosine
        );
    }
    out
}
