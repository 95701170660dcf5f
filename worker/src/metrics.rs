//! The worker's Prometheus metrics and the tiny HTTP server that exposes them
//! (with `/healthz`, see [`crate::health`]).
//!
//! Names: `jetinfer_worker_*`. Batches are counted by task and outcome
//! (`ok`, `error`, `expired`, `malformed`, `unpublished`, or the injected fault),
//! compute time, batch size and the wait in the queue are histograms, faults
//! are counted by kind.

use crate::health::Health;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use jetinfer_shared::protocol::Task;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A batch ended with `outcome` after `compute_seconds`.
pub fn batch_done(task: Task, outcome: &'static str, requests: usize, compute_seconds: f64) {
    let labels = [("task", task.as_str()), ("outcome", outcome)];
    metrics::counter!("jetinfer_worker_batches_total", &labels).increment(1);
    metrics::counter!("jetinfer_worker_requests_total", &labels).increment(requests as u64);
    metrics::histogram!("jetinfer_worker_batch_size", "task" => task.as_str())
        .record(requests as f64);
    if outcome == "ok" || outcome == "error" {
        metrics::histogram!("jetinfer_worker_batch_compute_seconds", "task" => task.as_str())
            .record(compute_seconds);
    }
}

/// A batch waited `seconds` in the work queue (since it was stored) before
/// its computation began: where queueing shows apart from compute.
pub fn queue_wait(task: Task, seconds: f64) {
    metrics::histogram!("jetinfer_worker_queue_wait_seconds", "task" => task.as_str())
        .record(seconds);
}

/// A forward pass ran over `batches` batches (more than one: merged).
pub fn forward_pass(batches: usize) {
    metrics::counter!("jetinfer_worker_forward_passes_total").increment(1);
    if batches > 1 {
        metrics::counter!("jetinfer_worker_merged_batches_total").increment(batches as u64);
    }
}

/// A batch arrived again (JetStream redelivery: a retry).
pub fn redelivered() {
    metrics::counter!("jetinfer_worker_redeliveries_total").increment(1);
}

/// Async requests left uncomputed at admission: `reason` is `cancelled`
/// (entry gone) or `answered` (answer already stored).
pub fn skipped(reason: &'static str, requests: u64) {
    if requests > 0 {
        metrics::counter!("jetinfer_worker_requests_skipped_total", "reason" => reason)
            .increment(requests);
    }
}

/// A message on a task subject was not a task batch.
pub fn malformed() {
    metrics::counter!("jetinfer_worker_malformed_total").increment(1);
}

/// A fault was injected on purpose (`crash`, `delay`, `hang`, `drop`).
pub fn fault(kind: &'static str) {
    metrics::counter!("jetinfer_worker_faults_injected_total", "fault" => kind).increment(1);
}

/// Batches being computed right now.
pub fn in_flight(delta: f64) {
    metrics::gauge!("jetinfer_worker_batches_in_flight").increment(delta);
}

/// Serve `GET /metrics` and `GET /healthz` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, jetinfer_shared::metrics::CONTENT_TYPE)],
                    jetinfer_shared::metrics::render(),
                )
            }),
        )
        .route("/healthz", get(move || async move { health.report() }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
