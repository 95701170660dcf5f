//! `GET /status` (workers, queue, counters), `GET /healthz`, `GET /readyz`,
//! `GET /recent_requests` and `GET /metrics`.
//!
//! Everything here is read live from NATS: workers from the heartbeat bucket,
//! the queue from JetStream consumer info. The gateway keeps no registry.

use super::error::{ApiError, ErrorBody};
use super::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::Json;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::heartbeats;
use jetinfer_shared::protocol::RequestRecord;
use jetinfer_shared::protocol::{Heartbeat, Task};
use jetinfer_shared::subjects;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A live worker as its last heartbeat describes it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerStatus {
    /// The heartbeat record.
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
    /// Milliseconds since that heartbeat.
    pub last_seen_ms_ago: u64,
}

/// One work consumer's backlog.
#[derive(Debug, Serialize, Default, utoipa::ToSchema)]
pub struct ConsumerStatus {
    /// Consumer name (`work-<model>-<task>-<priority>`).
    pub name: String,
    /// Batches not yet delivered to any worker.
    pub pending: u64,
    /// Batches delivered and not yet acked.
    pub in_flight: u64,
    /// Batches delivered more than once and not yet acked.
    pub redelivered: u64,
}

/// The work queue as a whole.
#[derive(Debug, Serialize, Default, utoipa::ToSchema)]
pub struct QueueStatus {
    /// Sum over consumers.
    pub pending: u64,
    /// Sum over consumers.
    pub in_flight: u64,
    /// Sum over consumers.
    pub redelivered: u64,
    /// Consumers that exist (a task with no worker ever started has none).
    pub consumers: Vec<ConsumerStatus>,
    /// Batches in `INFER_DEAD`: given up on, malformed or expired, kept
    /// for inspection (`DEAD_MAX_AGE`).
    pub dead_letters: u64,
    /// Set when JetStream could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `GET /status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// This gateway.
    pub gateway_id: String,
    /// NATS connection state as the client sees it.
    pub nats: String,
    /// Live workers, by id.
    pub workers: Vec<WorkerStatus>,
    /// Work-queue backlog.
    pub queue: QueueStatus,
    /// Request counters.
    pub gateway: jetinfer_shared::protocol::GatewayStats,
    /// Requests waiting for an answer now.
    pub waiting: usize,
}

/// The live workers, from their heartbeats (none when the bucket cannot be read).
pub(super) async fn workers(js: &async_nats::jetstream::Context) -> Vec<WorkerStatus> {
    let beats = heartbeats::live(js).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list workers");
        Vec::new()
    });
    let now = now_ms();
    beats
        .into_iter()
        .map(|heartbeat| WorkerStatus {
            last_seen_ms_ago: now.saturating_sub(heartbeat.updated_at_ms),
            heartbeat,
        })
        .collect()
}

/// Prometheus metrics, with the queue gauges read from JetStream now.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl axum::response::IntoResponse {
    crate::metrics::observe(state.admission.admitted(), &queue(&state.js).await);
    (
        [(header::CONTENT_TYPE, jetinfer_shared::metrics::CONTENT_TYPE)],
        jetinfer_shared::metrics::render(),
    )
}

async fn queue(js: &async_nats::jetstream::Context) -> QueueStatus {
    let stream = match js.get_stream(subjects::TASK_STREAM).await {
        Ok(s) => s,
        Err(e) => {
            return QueueStatus {
                error: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    let mut status = QueueStatus::default();
    let infos = match jetinfer_shared::topology::work_consumers(&stream).await {
        Ok(infos) => infos,
        Err(e) => {
            status.error = Some(e.to_string());
            return status;
        }
    };
    for info in infos {
        let c = ConsumerStatus {
            name: info.name,
            pending: info.num_pending,
            in_flight: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
        };
        status.pending += c.pending;
        status.in_flight += c.in_flight;
        status.redelivered += c.redelivered;
        status.consumers.push(c);
    }
    match js.get_stream(subjects::DEAD_STREAM).await {
        Ok(dead) => status.dead_letters = dead.cached_info().state.messages,
        Err(e) => status.error = Some(e.to_string()),
    }
    status
}

/// Live view of workers, queue and counters.
#[utoipa::path(get, path = "/status", tag = "operations",
    security((), ("api_key" = [])),
    responses((status = 200, body = Status), (status = 401, body = ErrorBody, description = "API keys are set and none or a wrong one was sent")))]
pub async fn status(State(state): State<Arc<AppState>>) -> Json<Status> {
    let (workers, queue) = tokio::join!(workers(&state.js), queue(&state.js));
    Json(Status {
        gateway_id: state.gateway_id.clone(),
        nats: state.nats.connection_state().to_string(),
        workers,
        queue,
        gateway: state.report.counters().snapshot(),
        waiting: state.waiters.len(),
    })
}

/// Body of `GET /readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// At least one live worker.
    pub ready: bool,
    /// Live workers.
    pub workers: usize,
    /// Live workers per task (0: nobody serves it).
    pub tasks: std::collections::BTreeMap<String, usize>,
    /// Live workers per model they serve.
    pub models: std::collections::BTreeMap<String, usize>,
    /// NATS connection state.
    pub nats: String,
}

/// Readiness: 200 when at least one live worker is connected, 503 otherwise.
/// The body counts live workers per task, so a task nobody serves shows as
/// 0, and per model.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Readiness, description = "at least one live worker"),
    (status = 503, body = Readiness, description = "no live worker")))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    let workers = workers(&state.js).await;
    let tasks = Task::ALL
        .iter()
        .map(|t| {
            let n = workers
                .iter()
                .filter(|w| w.heartbeat.tasks.contains(t))
                .count();
            (t.as_str().to_owned(), n)
        })
        .collect();
    let mut models = std::collections::BTreeMap::new();
    for model in workers.iter().flat_map(|w| &w.heartbeat.models) {
        *models.entry(model.name.clone()).or_default() += 1;
    }
    let ready = !workers.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        workers: workers.len(),
        tasks,
        models,
        nats: state.nats.connection_state().to_string(),
    };
    (status, Json(body))
}

/// Query of `GET /recent_requests`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecentQuery {
    /// Records to return, newest first (default 100, at most `REQUEST_LOG_SIZE`).
    #[param(minimum = 0, maximum = 4294967295_u64, nullable = false)]
    pub limit: Option<u32>,
}

/// The newest finished requests, newest first.
#[utoipa::path(get, path = "/recent_requests", tag = "operations", params(RecentQuery),
    security((), ("api_key" = [])),
    responses((status = 200, body = Vec<RequestRecord>),
        (status = 400, body = ErrorBody, description = "`limit` is not a non-negative integer"),
        (status = 401, body = ErrorBody, description = "API keys are set and none or a wrong one was sent")))]
pub async fn recent_requests(
    State(state): State<Arc<AppState>>,
    query: Result<Query<RecentQuery>, QueryRejection>,
) -> Result<Json<Vec<RequestRecord>>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::InvalidQuery(format!(
            "`limit` must be a non-negative integer: {}",
            e.body_text()
        ))
    })?;
    let limit = query.limit.map_or(100, |l| l as usize);
    let log = state.report.log();
    Ok(Json(log.newest(limit.min(log.capacity()))))
}

/// Body of `GET /healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    pub status: &'static str,
    /// NATS connection state.
    pub nats: String,
}

/// Liveness of the gateway process (and what it thinks of NATS).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok",
        nats: state.nats.connection_state().to_string(),
    })
}
