//! Where the model folder comes from: a local directory, or the Hugging Face hub.

use super::BackendError;
use std::path::PathBuf;

/// The model folder (`config.json`, `tokenizer.json`, the weights): `dir`
/// when given; otherwise `hub_id` downloaded with hf-hub (cached under
/// `HF_HOME`), which needs network access on first use.
pub fn resolve(dir: Option<PathBuf>, hub_id: &str) -> Result<PathBuf, BackendError> {
    if let Some(dir) = dir {
        return Ok(dir);
    }
    let download = |e: hf_hub::api::sync::ApiError| BackendError::Download {
        model: hub_id.to_owned(),
        reason: e.to_string(),
    };
    let repo = hf_hub::api::sync::Api::new()
        .map_err(download)?
        .model(hub_id.to_owned());
    let mut config = None;
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let path = repo.get(file).map_err(download)?;
        config.get_or_insert(path);
    }
    // Optional: the truncation length sentence-transformers uses.
    let _ = repo.get("sentence_bert_config.json");
    config
        .and_then(|p| p.parent().map(PathBuf::from))
        .ok_or_else(|| BackendError::Download {
            model: hub_id.to_owned(),
            reason: "hub returned no files".into(),
        })
}
