//! `GET /v1/models`: every model a live worker serves, with its tasks and
//! how many workers serve it, read from the heartbeats now. The envelope is
//! OpenAI's model list (`{"object":"list","data":[{"id","object":"model",…}]}`),
//! so its clients can list what this gateway offers.

use super::status::workers;
use super::AppState;
use axum::extract::State;
use axum::Json;
use jetinfer_shared::protocol::Task;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One model in `GET /v1/models`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelEntry {
    /// The model's id, as answers name it (`all-minilm-l6-v2`, `efficientnet-lite0`).
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds when the longest-running worker serving it started.
    pub created: u64,
    /// Always `jetinfer`.
    pub owned_by: &'static str,
    /// Tasks some live worker computes with it.
    pub tasks: Vec<Task>,
    /// Live workers serving it.
    pub workers: usize,
}

/// Body of `GET /v1/models`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The models, by id.
    pub data: Vec<ModelEntry>,
}

/// The models live workers serve now; an empty list when none is alive.
#[utoipa::path(get, path = "/v1/models", tag = "inference",
    security((), ("api_key" = [])),
    responses((status = 200, body = ModelList),
        (status = 401, body = super::error::ErrorBody, description = "API keys are set and none or a wrong one was sent")))]
pub async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let mut by_id: BTreeMap<String, ModelEntry> = BTreeMap::new();
    for worker in workers(&state.js).await {
        let beat = &worker.heartbeat;
        for model in &beat.models {
            let entry = by_id
                .entry(model.name.clone())
                .or_insert_with(|| ModelEntry {
                    id: model.name.clone(),
                    object: "model",
                    created: beat.started_at_ms / 1000,
                    owned_by: "jetinfer",
                    tasks: Vec::new(),
                    workers: 0,
                });
            entry.workers += 1;
            entry.created = entry.created.min(beat.started_at_ms / 1000);
            entry.tasks.extend(&model.tasks);
        }
    }
    let data = by_id
        .into_values()
        .map(|mut entry| {
            entry.tasks.sort();
            entry.tasks.dedup();
            entry
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}
