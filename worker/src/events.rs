//! Worker events on `infer.event.<worker>.<kind>`, fire-and-forget on core NATS.

use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::WorkerEvent;
use jetinfer_shared::subjects;
use uuid::Uuid;

/// Publishes this worker's events; losing one only blurs the dashboard, so
/// failures are logged and never stop the work.
#[derive(Clone)]
pub struct Events {
    client: async_nats::Client,
    worker_id: String,
}

/// The batch an event is about.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchRef {
    /// Batch id, when the message could be decoded.
    pub batch_id: Option<Uuid>,
    /// Requests in the batch.
    pub requests: usize,
    /// Delivery count.
    pub attempt: u64,
}

impl Events {
    /// Events of `worker_id`, sent through `client`.
    pub fn new(client: async_nats::Client, worker_id: String) -> Self {
        Self { client, worker_id }
    }

    /// Wait until published events have left this process.
    pub async fn flush(&self) {
        let _ = self.client.flush().await;
    }

    /// Publish one event of `kind`.
    pub async fn emit(&self, kind: &str, batch: BatchRef, latency_ms: f64, error: Option<String>) {
        let event = WorkerEvent {
            worker_id: self.worker_id.clone(),
            kind: kind.to_owned(),
            batch_id: batch.batch_id,
            requests: batch.requests,
            attempt: batch.attempt,
            latency_ms,
            error,
            at_ms: now_ms(),
        };
        let subject = subjects::event_subject(&self.worker_id, kind);
        match serde_json::to_vec(&event) {
            Ok(body) => {
                if let Err(e) = self.client.publish(subject, body.into()).await {
                    tracing::warn!(error = %e, kind, "cannot publish event");
                }
            }
            Err(e) => tracing::warn!(error = %e, kind, "cannot encode event"),
        }
    }
}
