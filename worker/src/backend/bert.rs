//! The baseline: candle-transformers' `BertModel` with sentence-transformers'
//! pooling, padded batches. `worker bench` measures the fast backend against it.
//!
//! Matches `SentenceTransformer("all-MiniLM-L6-v2").encode(..., normalize_embeddings=True)`:
//! truncation at `max_seq_length` (256) tokens, mean pooling over the
//! attention mask (so padding in a batch changes nothing), L2 normalisation.

use super::files::ModelFiles;
use super::{BackendError, Embedded, Embedder};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::BertModel;
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer};

/// A loaded BERT model and its tokenizer.
pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl BertEmbedder {
    /// Load a Hugging Face model folder ([`ModelFiles`]).
    pub fn load(dir: &Path) -> Result<Self, BackendError> {
        let ModelFiles {
            config,
            mut tokenizer,
            weights,
        } = ModelFiles::open(dir)?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let device = weights.device().clone();
        let model = BertModel::load(weights, &config)?;
        Ok(Self {
            model,
            tokenizer,
            device,
        })
    }
}

impl Embedder for BertEmbedder {
    fn embed_counted(&self, texts: &[&str]) -> Result<Embedded, BackendError> {
        if texts.is_empty() {
            return Ok(Embedded::default());
        }
        let encodings = super::encode(&self.tokenizer, texts)?;
        let tokens = super::token_counts(&encodings);
        let rows = encodings.len();
        let cols = encodings[0].get_ids().len();
        let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings
                .iter()
                .flat_map(|e| f(e).iter().copied())
                .collect()
        };
        let ids = Tensor::from_vec(flat(|e| e.get_ids()), (rows, cols), &self.device)?;
        let type_ids = Tensor::from_vec(flat(|e| e.get_type_ids()), (rows, cols), &self.device)?;
        let mask = Tensor::from_vec(flat(|e| e.get_attention_mask()), (rows, cols), &self.device)?;

        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(Embedded {
            vectors: mean.broadcast_div(&norms)?.to_vec2::<f32>()?,
            tokens,
        })
    }
}
