//! `worker bench`: raw in-process throughput of the model backends, the
//! serving one against candle's `BertModel` baseline, in one run on one corpus.
//!
//! Each measurement is tokenize → forward → pool → normalise over the whole
//! corpus in chunks of one batch size, after a warm-up, inside a rayon pool of
//! `--threads` threads (the pool a worker computes in).

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
#[derive(Debug, Clone, Copy, Serialize)]
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
}

/// Embed `texts` in chunks of `batch` (after one warm-up batch) and time it.
pub fn measure(
    model: &dyn Embedder,
    texts: &[&str],
    batch: usize,
) -> Result<Measurement, BackendError> {
    let batch = batch.max(1);
    model.embed(&texts[..batch.min(texts.len())])?;
    let started = Instant::now();
    let mut batches = 0;
    for chunk in texts.chunks(batch) {
        model.embed(chunk)?;
        batches += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Measurement {
        batch_size: batch,
        sentences_per_s: texts.len() as f64 / secs,
        ms_per_batch: secs * 1000.0 / batches as f64,
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
    let model = backend::load(kind, model_dir, "bench".into())?;
    let pool = backend::thread::compute_pool(threads)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    pool.install(|| {
        batch_sizes
            .iter()
            .map(|&b| measure(&*model, &refs, b))
            .collect()
    })
}

/// Both backends, side by side.
pub fn compare(
    model_dir: &Path,
    texts: &[String],
    batch_sizes: &[usize],
    threads: usize,
) -> Result<Vec<Row>, BackendError> {
    let fast = measure_all(Kind::Fast, model_dir, texts, batch_sizes, threads)?;
    let base = measure_all(Kind::Candle, model_dir, texts, batch_sizes, threads)?;
    Ok(fast
        .iter()
        .zip(&base)
        .map(|(f, b)| Row {
            batch_size: f.batch_size,
            sentences_per_s: f.sentences_per_s,
            ms_per_batch: f.ms_per_batch,
            baseline_sentences_per_s: b.sentences_per_s,
            baseline_ms_per_batch: b.ms_per_batch,
        })
        .collect())
}

/// The human-readable table.
pub fn table(rows: &[Row], texts: usize, threads: usize) -> String {
    let mut out = format!(
        "{texts} sentences, {threads} thread(s)\n\
         batch   fast sent/s   ms/batch   candle BertModel sent/s   ms/batch   speed-up\n"
    );
    for r in rows {
        out += &format!(
            "{:>5}   {:>11.1}   {:>8.2}   {:>23.1}   {:>8.2}   {:>7.2}x\n",
            r.batch_size,
            r.sentences_per_s,
            r.ms_per_batch,
            r.baseline_sentences_per_s,
            r.baseline_ms_per_batch,
            r.sentences_per_s / r.baseline_sentences_per_s
        );
    }
    out
}
