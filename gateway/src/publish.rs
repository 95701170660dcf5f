//! Publishing batches to the work-queue stream.
//!
//! A batch is one MessagePack message on `infer.task.<model>.<task>.<priority>` with
//! `Nats-Msg-Id` = batch id (JetStream drops a re-published duplicate) and
//! headers a person can read with the nats CLI. If JetStream does not
//! acknowledge it (stream full, no JetStream, timeout; no stream for more
//! than the few seconds a cluster takes to elect a new leader) every request
//! in it is answered with the reason: nothing hangs on a lost publish. Once
//! stored, the batch's sequence is recorded in the claim of each request sent
//! with an `Idempotency-Key`, so a retry can tell it is still queued, and
//! each async request (`POST /infer/async`) hears that it is queued (or why
//! not) before its client gets 202.

use crate::batcher::{Batch, BatchSink};
use crate::idempotency::Idempotency;
use crate::stored_batches::StoredBatches;
use crate::waiters::{Reply, Waiters};
use async_nats::jetstream;
use jetinfer_shared::protocol::TaskBatch;
use jetinfer_shared::store;
use std::sync::Arc;
use uuid::Uuid;

/// Sends batches and answers their requests when a publish fails.
pub struct Publisher {
    /// JetStream context.
    pub js: jetstream::Context,
    /// This gateway's result subject, carried in every batch.
    pub reply_subject: String,
    /// Waiting requests, answered here when their batch is not stored.
    pub waiters: Waiters,
    /// Stored batches by stream sequence, for advisories.
    pub stored: StoredBatches,
    /// Where keyed requests' claims learn their batch's sequence.
    pub idempotency: Idempotency,
}

/// Each batch is published on its own task, so the batcher never waits for JetStream.
impl BatchSink for Arc<Publisher> {
    fn accept(&self, batch: Batch) {
        let publisher = self.clone();
        tokio::spawn(async move { publisher.publish(batch).await });
    }
}

impl Publisher {
    /// Publish one batch and wait for JetStream to store it.
    pub async fn publish(&self, mut flushed: Batch) {
        let task = flushed.task;
        let claims: Vec<_> = flushed
            .items
            .iter()
            .filter_map(|q| {
                let tag = q.item.idempotency.clone()?;
                Some((q.item.request_id, tag, q.claim_revision?))
            })
            .collect();
        let told: Vec<_> = (flushed.items.iter_mut())
            .filter_map(|q| q.stored.take())
            .collect();
        let batch = TaskBatch {
            batch_id: Uuid::new_v4(),
            model: flushed.model,
            task,
            priority: flushed.priority,
            reply_subject: self.reply_subject.clone(),
            deadline_ms: flushed
                .items
                .iter()
                .map(|q| q.deadline_ms)
                .max()
                .unwrap_or(0),
            items: flushed.items.into_iter().map(|q| q.item).collect(),
        };
        let sent = self.send(&batch).await;
        crate::metrics::batch_published(task, batch.items.len(), sent.is_ok());
        for stored in told {
            let _ = stored.send(sent.clone());
        }
        match sent {
            Ok(seq) => {
                // Waited on: async requests are answered from the results
                // bucket, by whichever gateway is asked.
                let ids: Vec<Uuid> = (batch.items.iter())
                    .filter(|i| i.deferred.is_none())
                    .map(|i| i.request_id)
                    .collect();
                if !ids.is_empty() {
                    self.stored
                        .published(seq, batch.batch_id, ids, batch.deadline_ms);
                }
                tracing::debug!(batch_id = %batch.batch_id, model = %batch.model, task = %task, requests = batch.items.len(), seq, "batch queued");
                if !claims.is_empty() {
                    self.idempotency.published(claims, seq).await;
                }
            }
            Err(reason) => {
                tracing::warn!(batch_id = %batch.batch_id, task = %task, requests = batch.items.len(),
                    error = %reason, "batch not queued");
                for item in &batch.items {
                    self.waiters
                        .answer(item.request_id, Reply::NotQueued(reason.clone()));
                }
            }
        }
    }

    /// Publish and return the stream sequence JetStream stored the batch at.
    async fn send(&self, batch: &TaskBatch) -> Result<u64, String> {
        let msg_id = batch.batch_id.to_string();
        store::task_batch(&self.js, batch, &msg_id, crate::metrics::publish_retried)
            .await
            .map_err(|e| format!("work queue refused the batch: {e}"))
    }
}
