//! Where the model folder comes from: a local directory, or the Hugging Face hub.

use super::BackendError;
use std::path::PathBuf;

/// A resolved model folder and the name to report for it.
pub struct ModelSource {
    /// Folder holding `config.json`, `tokenizer.json` and the weights.
    pub dir: PathBuf,
    /// Name shown in results and heartbeats (the hub id when known).
    pub name: String,
}

/// Use `dir` when given; otherwise download `hub_id` with hf-hub (cached under
/// `HF_HOME`), which needs network access on first use.
pub fn resolve(dir: Option<PathBuf>, hub_id: &str) -> Result<ModelSource, BackendError> {
    if let Some(dir) = dir {
        return Ok(ModelSource {
            dir,
            name: hub_id.to_owned(),
        });
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
    let dir = config
        .and_then(|p| p.parent().map(PathBuf::from))
        .ok_or_else(|| BackendError::Download {
            model: hub_id.to_owned(),
            reason: "hub returned no files".into(),
        })?;
    Ok(ModelSource {
        dir,
        name: hub_id.to_owned(),
    })
}
