//! Reading a Hugging Face BERT folder: config, tokenizer (with the model's
//! truncation) and weights. Shared by every BERT backend, so they read the
//! same files the same way.

use super::BackendError;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// Sequence length sentence-transformers uses for this family when the folder does not say.
const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

/// What a model folder holds, loaded.
pub struct ModelFiles {
    /// `config.json`.
    pub config: Config,
    /// `tokenizer.json`, truncating at `max_seq_length` like sentence-transformers.
    pub tokenizer: Tokenizer,
    /// The weights (memory-mapped safetensors, or `pytorch_model.bin`).
    pub weights: VarBuilder<'static>,
}

fn read_error(path: &Path, reason: impl ToString) -> BackendError {
    BackendError::ModelFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// `max_seq_length` from `sentence_bert_config.json`, the truncation the model was trained with.
fn max_seq_length(dir: &Path) -> usize {
    std::fs::read(dir.join("sentence_bert_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("max_seq_length")?.as_u64())
        .map_or(DEFAULT_MAX_SEQ_LENGTH, |n| n as usize)
}

impl ModelFiles {
    /// Load `config.json`, `tokenizer.json` and `model.safetensors` (or
    /// `pytorch_model.bin`) from `dir`, as f32 on the CPU.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        let device = Device::Cpu;
        let config_path = dir.join("config.json");
        let config_bytes = std::fs::read(&config_path).map_err(|e| read_error(&config_path, e))?;
        let config: Config =
            serde_json::from_slice(&config_bytes).map_err(|e| read_error(&config_path, e))?;

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| read_error(&tokenizer_path, e))?;
        let max_len = max_seq_length(dir).min(config.max_position_embeddings);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| BackendError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);

        let safetensors = dir.join("model.safetensors");
        let weights = if safetensors.exists() {
            // SAFETY: the file is memory-mapped read-only; nothing in this
            // process writes it, and a model folder is not edited while served.
            unsafe { VarBuilder::from_mmaped_safetensors(&[&safetensors], DType::F32, &device) }
                .map_err(|e| read_error(&safetensors, e))?
        } else {
            let bin = dir.join("pytorch_model.bin");
            VarBuilder::from_pth(&bin, DType::F32, &device).map_err(|e| read_error(&bin, e))?
        };
        Ok(Self {
            config,
            tokenizer,
            weights,
        })
    }
}
