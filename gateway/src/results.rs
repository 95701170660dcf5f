//! Routing results from `infer.result.<gateway-id>` to waiting requests.
//!
//! The first result for a request wins; a later one (a redelivered batch that
//! was computed twice) finds no waiter and is counted as a dropped duplicate.

use crate::inflight::InFlight;
use crate::pending::{Pending, Reply};
use crate::stats::Counters;
use futures::StreamExt;
use jetinfer_shared::protocol::{self, ResultBatch};
use std::sync::Arc;

/// Consume the result subscription until it ends.
pub async fn route(
    mut results: async_nats::Subscriber,
    pending: Pending,
    inflight: InFlight,
    counters: Arc<Counters>,
) {
    while let Some(msg) = results.next().await {
        let batch: ResultBatch = match protocol::decode(&msg.payload) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "malformed result dropped");
                continue;
            }
        };
        inflight.finished(batch.batch_id);
        for item in batch.items {
            let reply = Reply::Done {
                worker_id: batch.worker_id.clone(),
                model: batch.model.clone(),
                attempt: batch.attempt,
                outcome: item.outcome,
            };
            if !pending.answer(item.request_id, reply) {
                counters.duplicate();
                tracing::debug!(request_id = %item.request_id, batch_id = %batch.batch_id,
                    worker_id = %batch.worker_id, "late or duplicate result dropped");
            }
        }
    }
}
