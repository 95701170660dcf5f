//! BERT sentence embedder with sentence-transformers' pooling.
//!
//! Matches `SentenceTransformer("all-MiniLM-L6-v2").encode(..., normalize_embeddings=True)`:
//! truncation at `max_seq_length` (256) tokens, mean pooling over the
//! attention mask (so padding in a batch changes nothing), L2 normalisation.

use super::{BackendError, Embedder};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Sequence length sentence-transformers uses for this family when the folder does not say.
const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

/// A loaded BERT model and its tokenizer.
pub struct BertEmbedder {
    name: String,
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

fn model_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn read_error(path: &Path, reason: impl ToString) -> BackendError {
    BackendError::ModelFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// `max_seq_length` from `sentence_bert_config.json`, the truncation the model was trained with.
fn max_seq_length(dir: &Path) -> usize {
    std::fs::read(model_file(dir, "sentence_bert_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("max_seq_length")?.as_u64())
        .map_or(DEFAULT_MAX_SEQ_LENGTH, |n| n as usize)
}

impl BertEmbedder {
    /// Load `config.json`, `tokenizer.json` and `model.safetensors` (or
    /// `pytorch_model.bin`) from a Hugging Face model folder.
    pub fn load(dir: &Path, name: String) -> Result<Self, BackendError> {
        let device = Device::Cpu;
        let config_path = model_file(dir, "config.json");
        let config_bytes = std::fs::read(&config_path).map_err(|e| read_error(&config_path, e))?;
        let config: Config =
            serde_json::from_slice(&config_bytes).map_err(|e| read_error(&config_path, e))?;

        let tokenizer_path = model_file(dir, "tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| read_error(&tokenizer_path, e))?;
        let max_len = max_seq_length(dir).min(config.max_position_embeddings);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| BackendError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));

        let safetensors = model_file(dir, "model.safetensors");
        let vb = if safetensors.exists() {
            // SAFETY: the file is memory-mapped read-only; nothing in this
            // process writes it, and a model folder is not edited while served.
            unsafe { VarBuilder::from_mmaped_safetensors(&[&safetensors], DType::F32, &device) }
                .map_err(|e| read_error(&safetensors, e))?
        } else {
            let bin = model_file(dir, "pytorch_model.bin");
            VarBuilder::from_pth(&bin, DType::F32, &device).map_err(|e| read_error(&bin, e))?
        };
        let model = BertModel::load(vb, &config)?;
        Ok(Self {
            name,
            model,
            tokenizer,
            device,
        })
    }
}

impl Embedder for BertEmbedder {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| BackendError::Tokenizer(e.to_string()))?;
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
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}
