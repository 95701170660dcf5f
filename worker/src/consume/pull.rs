//! Pulling: a worker asks JetStream for the next batch only when its compute
//! slot is free, so busy workers leave work to idle ones (load-aware dispatch
//! without any registry). With dynamic batching on, batches already queued
//! behind the one pulled are taken along to be computed together.

use super::Processor;
use async_nats::jetstream::consumer::pull::BatchError;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Message;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the pull for extra queued batches may wait (they were queued a moment ago).
const QUEUED_WAIT: Duration = Duration::from_millis(20);

/// How long one pull request waits for a batch before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

impl Processor {
    /// Pull from `consumer` until `stop` fires; a batch already pulled is finished.
    ///
    /// An idle worker waits for one batch; once it has it, it also takes (without
    /// waiting) up to [`Processor::merge_batches`] − 1 more that are already queued,
    /// and computes them together in forward passes of at most `max_batch_tokens`.
    pub async fn pull_loop(
        self: Arc<Self>,
        consumer: PullConsumer,
        name: String,
        stop: CancellationToken,
    ) {
        loop {
            // Wait until idle: a busy worker does not ask for more work.
            tokio::select! {
                _ = stop.cancelled() => return,
                permit = self.slot.acquire() => drop(permit),
            }
            let pulled = tokio::select! {
                _ = stop.cancelled() => return,
                pulled = fetch(&consumer, &name, 1, PULL_EXPIRES) => pulled,
            };
            let mut held = match pulled {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "pull failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let Some(last) = held.last() else {
                continue;
            };
            // JetStream says how many more wait behind this one; ask only then,
            // so a lone batch never waits for companions.
            let behind = last.info().map_or(0, |i| i.pending as usize);
            if self.merge_batches > 1 && behind > 0 {
                let more = behind.min(self.merge_batches - 1);
                match fetch(&consumer, &name, more, QUEUED_WAIT).await {
                    Ok(more) => held.extend(more),
                    Err(e) => tracing::debug!(consumer = %name, error = %e, "no extra batches"),
                }
            }
            self.handle(held).await;
        }
    }
}

/// Up to `count` messages from `consumer`, waiting at most `expires` for them;
/// an error only when the pull request itself could not be made.
async fn fetch(
    consumer: &PullConsumer,
    name: &str,
    count: usize,
    expires: Duration,
) -> Result<Vec<Message>, BatchError> {
    let pulled = consumer
        .batch()
        .max_messages(count)
        .expires(expires)
        .messages()
        .await;
    let mut messages = pulled?;
    let mut held = Vec::new();
    while let Some(next) = messages.next().await {
        match next {
            Ok(msg) => held.push(msg),
            Err(e) => {
                tracing::debug!(consumer = %name, error = %e, "pull ended");
                break;
            }
        }
    }
    Ok(held)
}
