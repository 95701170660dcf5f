//! Model backends: the only code that knows about tensors.
//!
//! A backend is synchronous and owns its model; [`thread::BackendThread`] runs
//! it on a dedicated OS thread so candle never blocks the async runtime, and
//! the consumer talks to it through a channel.
//!
//! # Layout
//! - [`fast`]: the serving backend, a padding-free BERT encoder for CPU batches.
//! - [`bert`]: the baseline, candle-transformers' `BertModel` (padded batches).
//! - [`files`]: reading a model folder (config, tokenizer, weights).
//! - [`attention`]: multi-head self-attention on the fused QKV rows, one
//!   pool task per (text, head).
//! - [`gemm`]: the packed, cache-blocked GEMM and its per-ISA micro-kernels.
//! - [`kernels`]: the dense layers as candle ops, bias + GELU and bias +
//!   residual + layer norm fused into the GEMM's output.
//! - [`source`]: where the model folder comes from (a local dir or the hub).
//! - [`thread`]: the dedicated compute thread and its async handle.
//! - [`vision`]: image models (EfficientNet-Lite0) and their preprocessing.
//! - `toy` (tests only): a deterministic embedder for consume-path unit tests.

pub mod attention;
pub mod awake;
pub mod bert;
pub mod fast;
pub mod files;
pub mod gemm;
pub mod kernels;
pub mod source;
pub mod thread;
#[cfg(test)]
pub mod toy;
pub mod vision;

/// Why a backend could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A model file is missing or unreadable.
    #[error("cannot read model file {path}: {reason}")]
    ModelFile {
        /// The file that failed.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The model could not be downloaded from the hub.
    #[error("cannot download model {model}: {reason}")]
    Download {
        /// Hub model id.
        model: String,
        /// What went wrong.
        reason: String,
    },
    /// Tokenisation failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The forward pass failed.
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    /// The configured kernels (`--kernels` / `KERNELS`) cannot run here.
    #[error("kernels: {0}")]
    Kernels(String),
    /// The compute thread pool could not be started.
    #[error("cannot start compute pool: {0}")]
    Pool(#[from] rayon::ThreadPoolBuildError),
    /// The compute thread is gone (it panicked or the worker is stopping).
    #[error("backend thread stopped")]
    Stopped,
    /// A job for a kind of model this worker does not serve (its tasks are
    /// chosen from its models, so only a hand-made batch gets here).
    #[error("this worker serves no {0} model")]
    NotServed(&'static str),
}

/// Tokenise `texts` in one call, with the tokenizer's truncation (and padding, if set).
pub fn encode(
    tokenizer: &tokenizers::Tokenizer,
    texts: &[&str],
) -> Result<Vec<tokenizers::Encoding>, BackendError> {
    tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| BackendError::Tokenizer(e.to_string()))
}

/// The tokens the model reads of each encoded text (special tokens
/// included, after truncation, padding not): what usage reports count.
pub fn token_counts(encodings: &[tokenizers::Encoding]) -> Vec<usize> {
    encodings
        .iter()
        .map(|e| e.get_attention_mask().iter().filter(|&&m| m != 0).count())
        .collect()
}

/// What one forward pass gives: an L2-normalised embedding per text and the
/// tokens the model read of each ([`token_counts`]), in the texts' order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embedded {
    /// The embeddings.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens per text.
    pub tokens: Vec<usize>,
}

/// A sentence-embedding model. One call is one forward pass over all texts.
pub trait Embedder: Send + Sync {
    /// Embeddings and token counts of `texts`, in one forward pass.
    fn embed_counted(&self, texts: &[&str]) -> Result<Embedded, BackendError>;

    /// L2-normalised embeddings, one per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.embed_counted(texts).map(|e| e.vectors)
    }
}

/// Which implementation computes embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// [`fast::FastBert`]: packed tokens, fused QKV, attention by length group.
    Fast,
    /// [`bert::BertEmbedder`]: candle-transformers' `BertModel`, the baseline.
    Candle,
}

/// Load the model folder `dir` with the `kind` backend, the fast one on the
/// kernels named by `KERNELS` (default `auto`: the best this CPU runs) with
/// the weights stored as `WEIGHTS` says (default `f32`).
pub fn load(kind: Kind, dir: &std::path::Path) -> Result<Box<dyn Embedder>, BackendError> {
    load_with(
        kind,
        gemm::Kernels::from_env().map_err(BackendError::Kernels)?,
        gemm::Weights::from_env().map_err(BackendError::Kernels)?,
        dir,
    )
}

/// [`load`] on the given kernels and weight format (`--kernels`,
/// `--weights`); the candle baseline ignores them.
pub fn load_with(
    kind: Kind,
    kernels: gemm::Kernels,
    weights: gemm::Weights,
    dir: &std::path::Path,
) -> Result<Box<dyn Embedder>, BackendError> {
    Ok(match kind {
        Kind::Fast => Box::new(fast::FastBert::load(dir, kernels, weights)?),
        Kind::Candle => Box::new(bert::BertEmbedder::load(dir)?),
    })
}
