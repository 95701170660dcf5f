//! Observability records: what workers and gateways publish about
//! themselves, as JSON so `nats kv get` and `nats sub` show them as they are.
//!
//! None of these is on the hot path; the dashboard and the gateway's status
//! pages are built from them.

use super::task::Task;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One model a worker serves and the tasks it computes with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServedModel {
    /// The model's short id (`all-minilm-l6-v2`, `efficientnet-lite0`).
    pub name: String,
    /// The tasks it computes on this worker.
    pub tasks: Vec<Task>,
}

/// A worker's liveness record in the `INFER_WORKERS` bucket (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    /// Worker id, also the KV key.
    pub id: String,
    /// Tasks the worker pulls.
    pub tasks: Vec<Task>,
    /// Models the worker serves, each with its tasks.
    pub models: Vec<ServedModel>,
    /// Worker build version.
    pub version: String,
    /// `starting`, `ready` or `draining`.
    pub state: String,
    /// Batches being computed right now.
    pub in_flight: u64,
    /// Requests answered successfully since start.
    pub processed: u64,
    /// Requests answered with an error since start.
    pub failed: u64,
    /// Batches received on a redelivery since start.
    #[serde(default)]
    pub redelivered: u64,
    /// Async requests not computed since start because they were cancelled
    /// (`DELETE /result/{id}`) or expired before a worker took them.
    #[serde(default)]
    pub cancelled: u64,
    /// Compute time of the last batch, in milliseconds.
    pub last_batch_ms: f64,
    /// Unix milliseconds when the worker started.
    pub started_at_ms: u64,
    /// Unix milliseconds of this heartbeat.
    pub updated_at_ms: u64,
}

/// Something that happened on a worker, published on `infer.event.<worker>.<kind>`
/// (JSON) for the dashboard and for people watching with `nats sub 'infer.event.>'`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerEvent {
    /// Worker the event happened on.
    pub worker_id: String,
    /// Per batch: `started`, `completed`, `failed`, `redelivered`, `expired`;
    /// per worker: `online`, `stopped`.
    pub kind: String,
    /// Batch concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    /// Requests in that batch.
    #[serde(default)]
    pub requests: usize,
    /// Delivery count of that batch.
    #[serde(default)]
    pub attempt: u64,
    /// For `completed`, the compute time; for `started`, how long the batch
    /// waited in the work queue since it was stored.
    #[serde(default)]
    pub latency_ms: f64,
    /// What went wrong, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// One finished request as the gateway saw it: kept for `/recent_requests`
/// and published on `infer.event.<gateway-id>.request` for the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequestRecord {
    /// Request id.
    pub request_id: Uuid,
    /// Task.
    pub task: Task,
    /// `ok` or the error code the client got.
    pub outcome: String,
    /// HTTP status sent.
    pub status: u16,
    /// Worker that answered, if any.
    pub worker_id: Option<String>,
    /// Redeliveries before the answer.
    pub retries: u64,
    /// Time from acceptance to answer.
    pub latency_ms: f64,
    /// Error message, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Characters of the input's main text (the query for similarity).
    #[serde(default)]
    pub input_chars: usize,
    /// A fingerprint of that text ([`super::Fingerprint`]): equal texts show
    /// equal hashes on one gateway, without the text.
    #[serde(default)]
    pub input_hash: String,
    /// The main text, truncated, only where previews are on
    /// (`DASHBOARD_SHOW_INPUTS`); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub input: String,
    /// The output, summarised ([`super::TaskOutput::summary`]): with
    /// previews off it names no text and no vector values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Unix ms of the answer.
    pub finished_at_ms: u64,
}

/// A gateway's request counters since it started, published every second on
/// `infer.event.<gateway-id>.stats` so the dashboard shows totals, not just
/// what it saw since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayStats {
    /// Requests accepted (validated and queued).
    pub submitted: u64,
    /// Answered with an output.
    pub completed: u64,
    /// Answered with an error after being accepted (includes timeouts).
    pub failed: u64,
    /// Answered after at least one redelivery.
    pub retried: u64,
    /// Of `failed`: no answer before the request timeout.
    pub timed_out: u64,
    /// Refused at validation (4xx).
    pub rejected: u64,
    /// Results that arrived for an already answered request (redelivery
    /// duplicates). A late result for a request given up on (timed out,
    /// client gone) is not one.
    pub duplicates_dropped: u64,
    /// Accepted requests whose client hung up before the answer came.
    #[serde(default)]
    pub client_gone: u64,
}
