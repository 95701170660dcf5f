//! Result publish: the answer is stored in the result stream before the task
//! is acked, so an ack always means "the gateway can have this answer".

use async_nats::jetstream;
use jetinfer_shared::protocol::{self, ResultBatch, TaskBatch};
use jetinfer_shared::subjects;

/// Publishes results with a JetStream ack.
#[derive(Clone)]
pub struct ResultPublisher {
    js: jetstream::Context,
    worker_id: String,
}

impl ResultPublisher {
    /// Results of `worker_id` (sent in the `Jetinfer-Worker` header) through `js`.
    pub fn new(js: jetstream::Context, worker_id: String) -> Self {
        Self { js, worker_id }
    }

    /// Publish `result` to `batch`'s reply subject and wait until JetStream stored it.
    pub async fn publish(&self, batch: &TaskBatch, result: &ResultBatch) -> Result<(), String> {
        let body = protocol::encode(result).map_err(|e| e.to_string())?;
        let mut headers = subjects::payload_headers(&batch.batch_id, result.items.len());
        headers.insert(subjects::HEADER_WORKER, self.worker_id.as_str());
        let ack = self
            .js
            .publish_with_headers(batch.reply_subject.clone(), headers, body.into())
            .await
            .map_err(|e| e.to_string())?;
        ack.await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
