//! Routing results from `infer.result.<gateway-id>` to waiting requests.
//!
//! The first result for a request wins; a later one (a redelivered batch that
//! was computed twice) finds no waiter and is counted as a dropped duplicate.

use crate::report::Report;
use crate::stored_batches::StoredBatches;
use crate::waiters::{Reply, Waiters};
use futures::StreamExt;
use jetinfer_shared::protocol::{self, ResultBatch};
use std::sync::Arc;

/// Consume the result subscription until it ends.
pub async fn route(
    mut results: async_nats::Subscriber,
    waiters: Waiters,
    stored: StoredBatches,
    report: Arc<Report>,
) {
    while let Some(msg) = results.next().await {
        let batch: ResultBatch = match protocol::decode(&msg.payload) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "malformed result dropped");
                continue;
            }
        };
        stored.finished(batch.batch_id);
        for item in batch.items {
            let reply = Reply::Done {
                worker_id: batch.worker_id.clone(),
                model: batch.model.clone(),
                attempt: batch.attempt,
                outcome: item.outcome,
            };
            if !waiters.answer(item.request_id, reply) {
                report.duplicate_result(item.request_id, batch.batch_id, &batch.worker_id);
            }
        }
    }
}
