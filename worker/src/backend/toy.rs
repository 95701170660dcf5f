//! A tiny deterministic embedder for unit tests of the consume path: no model
//! files, instant, and it counts its forward passes so tests can see merging.

use super::{BackendError, Embedded, Embedder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Embeds a text as its normalised (length, vowels, spaces, 1) vector.
#[derive(Default)]
pub struct ToyEmbedder {
    /// Forward passes so far (one per `embed` call).
    pub passes: Arc<AtomicUsize>,
}

/// The embedding [`ToyEmbedder`] gives `text`.
pub fn toy_embedding(text: &str) -> Vec<f32> {
    let count = |f: fn(&char) -> bool| text.chars().filter(f).count() as f32;
    let v = [
        text.chars().count() as f32,
        count(|c| "aeiou".contains(*c)),
        count(|c| *c == ' '),
        1.0,
    ];
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// Embeds a text as its normalised (length, vowels, spaces, 1) vector and
/// counts a token per word.
impl Embedder for ToyEmbedder {
    fn embed_counted(&self, texts: &[&str]) -> Result<Embedded, BackendError> {
        self.passes.fetch_add(1, Ordering::SeqCst);
        Ok(Embedded {
            vectors: texts.iter().map(|t| toy_embedding(t)).collect(),
            tokens: texts.iter().map(|t| t.split_whitespace().count()).collect(),
        })
    }
}
