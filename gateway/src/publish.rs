//! Publishing batches to the work-queue stream.
//!
//! A batch is one MessagePack message on `infer.task.<task>.<priority>` with
//! `Nats-Msg-Id` = batch id (JetStream drops a re-published duplicate) and
//! headers a person can read with the nats CLI. If JetStream does not
//! acknowledge it (stream full, no JetStream, timeout) every request in it is
//! answered at once with the reason: nothing hangs on a lost publish.

use crate::batcher::{Batch, BatchSink};
use crate::stored_batches::StoredBatches;
use crate::waiters::{Reply, Waiters};
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream;
use jetinfer_shared::protocol::{self, TaskBatch};
use jetinfer_shared::subjects;
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
    pub async fn publish(&self, flushed: Batch) {
        let task = flushed.task;
        let batch = TaskBatch {
            batch_id: Uuid::new_v4(),
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
        match sent {
            Ok(seq) => {
                let ids = batch.items.iter().map(|i| i.request_id).collect();
                self.stored
                    .published(seq, batch.batch_id, ids, batch.deadline_ms);
                tracing::debug!(batch_id = %batch.batch_id, task = %task, requests = batch.items.len(), seq, "batch queued");
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
        let body = protocol::encode(batch).map_err(|e| e.to_string())?;
        let mut headers = subjects::payload_headers(&batch.batch_id, batch.items.len());
        headers.insert(NATS_MESSAGE_ID, batch.batch_id.to_string().as_str());
        headers.insert(subjects::HEADER_TASK, batch.task.as_str());
        headers.insert(
            subjects::HEADER_DEADLINE,
            batch.deadline_ms.to_string().as_str(),
        );
        let subject = subjects::task_subject(batch.task, batch.priority);
        let ack = self
            .js
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|e| format!("work queue unavailable: {e}"))?;
        ack.await
            .map(|ack| ack.sequence)
            .map_err(|e| format!("work queue refused the batch: {e}"))
    }
}
