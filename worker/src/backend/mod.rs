//! Model backends: the only code that knows about tensors.
//!
//! A backend is synchronous and owns its model; [`thread::BackendThread`] runs
//! it on a dedicated OS thread so candle never blocks the async runtime, and
//! the consumer talks to it through a channel.
//!
//! # Layout
//! - [`bert`]: all-MiniLM-L6-v2 style sentence embedder (BERT + mean pooling).
//! - [`source`]: where the model folder comes from (a local dir or the hub).
//! - [`thread`]: the dedicated compute thread and its async handle.

pub mod bert;
pub mod source;
pub mod thread;

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
    /// The compute thread is gone (it panicked or the worker is stopping).
    #[error("backend thread stopped")]
    Stopped,
}

/// A sentence-embedding model. One call is one forward pass over all texts.
pub trait Embedder: Send {
    /// Name reported in results and heartbeats.
    fn model_name(&self) -> &str;
    /// L2-normalised embeddings, one per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError>;
}
