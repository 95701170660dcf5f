//! Bookkeeping: one call per outcome of a delivery, feeding everyone who keeps
//! account of it — Prometheus metrics, the heartbeat counters, worker events
//! and the log — so they can never disagree about what happened.

use super::admit::Delivery;
use crate::counters::Counters;
use crate::events::{BatchRef, Events};
use crate::faults::Unanswered;
use crate::metrics;
use jetinfer_shared::protocol::{ItemOutcome, ResultBatch};

/// Where a worker reports what became of each batch it was handed.
#[derive(Clone)]
pub struct Report {
    events: Events,
    counters: Counters,
    worker_id: String,
}

impl Report {
    /// Reports of `worker_id`, as `events` and into `counters`.
    pub fn new(events: Events, counters: Counters, worker_id: String) -> Self {
        Self {
            events,
            counters,
            worker_id,
        }
    }

    /// A message on a task subject was not a valid task batch and was terminated.
    pub async fn malformed(&self, subject: &str, attempt: u64, error: String) {
        tracing::error!(worker_id = %self.worker_id, subject, attempt, error = %error,
            outcome = "malformed", "terminating malformed task message");
        metrics::malformed();
        self.counters.rejected(1);
        let batch = BatchRef {
            attempt,
            ..Default::default()
        };
        self.events.emit("failed", batch, 0.0, Some(error)).await;
    }

    /// A batch arrived again: an earlier delivery was not acked in time.
    pub async fn redelivered(&self, d: &Delivery) {
        metrics::redelivered();
        self.counters.redelivered();
        self.events
            .emit("redelivered", d.batch_ref(), 0.0, None)
            .await;
    }

    /// Async requests of a batch were left out uncomputed at admission:
    /// `cancelled` ones (entry gone), `answered` ones (answer already stored).
    pub fn skipped(&self, d: &Delivery, cancelled: u64, answered: u64) {
        if cancelled + answered == 0 {
            return;
        }
        tracing::info!(worker_id = %self.worker_id, batch_id = %d.batch.batch_id, attempt = d.attempt,
            cancelled, answered, "async requests left uncomputed");
        metrics::skipped("cancelled", cancelled);
        metrics::skipped("answered", answered);
        self.counters.cancelled(cancelled);
    }

    /// A batch arrived after its deadline and was terminated uncomputed.
    pub async fn expired(&self, d: &Delivery) {
        self.not_answered(d, 0.0, "expired", None);
        self.events.emit("expired", d.batch_ref(), 0.0, None).await;
    }

    /// A batch is being computed; its event and a histogram say how long it
    /// waited in the queue first.
    pub async fn started(&self, d: &Delivery) {
        metrics::in_flight(1.0);
        self.counters.batch_started();
        let queued_ms = d.queued_ms();
        metrics::queue_wait(d.batch.task, queued_ms / 1000.0);
        self.events
            .emit("started", d.batch_ref(), queued_ms, None)
            .await;
    }

    /// A batch was answered: its result is stored and its task acked.
    pub async fn answered(&self, d: &Delivery, result: &ResultBatch) {
        let failed = result
            .items
            .iter()
            .filter(|i| !matches!(i.outcome, ItemOutcome::Ok(_)))
            .count();
        let ok = result.items.len() - failed;
        let outcome = if failed == 0 { "ok" } else { "error" };
        metrics::in_flight(-1.0);
        metrics::batch_done(
            d.batch.task,
            outcome,
            ok + failed,
            result.compute_ms / 1000.0,
        );
        self.counters
            .batch_finished(ok as u64, failed as u64, result.compute_ms);
        for item in &result.items {
            let error = match &item.outcome {
                ItemOutcome::Ok(_) => None,
                ItemOutcome::Error(e) => Some(e.clone()),
                ItemOutcome::TooLarge { size, limit } => Some(format!(
                    "result of {size} bytes over the {limit}-byte limit"
                )),
            };
            tracing::info!(request_id = %item.request_id, batch_id = %d.batch.batch_id,
                worker_id = %self.worker_id, task = %d.batch.task, attempt = d.attempt,
                latency_ms = result.compute_ms,
                outcome = if error.is_none() { "ok" } else { "error" }, error = error.as_deref(), "task done");
        }
        self.events
            .emit("completed", d.batch_ref(), result.compute_ms, None)
            .await;
    }

    /// A started batch's delivery ended without an answer (left to redelivery).
    pub async fn unanswered(&self, d: &Delivery, why: &Unanswered, compute_ms: f64) {
        metrics::in_flight(-1.0);
        self.counters.batch_finished(0, 0, compute_ms);
        self.not_answered(d, compute_ms, why.outcome, Some(&why.error));
        self.events
            .emit("failed", d.batch_ref(), compute_ms, Some(why.error.clone()))
            .await;
    }

    /// Wait until reported events have left this process (before an exit).
    pub async fn flush(&self) {
        self.events.flush().await;
    }

    /// Metrics and one log line per request of a batch this delivery did not answer.
    fn not_answered(
        &self,
        d: &Delivery,
        latency_ms: f64,
        outcome: &'static str,
        error: Option<&str>,
    ) {
        let batch = &d.batch;
        metrics::batch_done(batch.task, outcome, batch.items.len(), latency_ms / 1000.0);
        for item in &batch.items {
            tracing::warn!(request_id = %item.request_id, batch_id = %batch.batch_id,
                worker_id = %self.worker_id, task = %batch.task, attempt = d.attempt, latency_ms,
                outcome, fault = outcome, error, "task not answered by this delivery");
        }
    }
}
