//! Listening to JetStream's advisories about the task stream.
//!
//! When a batch reaches `MAX_DELIVER` without an ack, or a worker terminates
//! it, JetStream publishes an advisory naming its stream sequence. The
//! gateway that published the batch answers its waiting requests at once with
//! the number of attempts, and removes a given-up batch from the work queue.
//!
//! Async requests have no waiting gateway: every gateway that hears a
//! max-deliveries advisory reads the batch from the stream, stores
//! `retries_exhausted` as the answer of each async request in it (unless it
//! has one), and only then deletes the batch, so the answer survives the
//! gateway that took the request.

use crate::deferred::AsyncResults;
use crate::stored_batches::StoredBatches;
use crate::waiters::{Reply, Waiters};
use futures::StreamExt;
use jetinfer_shared::protocol::{self, TaskBatch};
use jetinfer_shared::subjects;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Advisory {
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

/// Subscribe to the advisories, then return the loop that answers them.
pub async fn watch(
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    stored: StoredBatches,
    waiters: Waiters,
    deferred: AsyncResults,
) -> Result<impl std::future::Future<Output = ()>, async_nats::SubscribeError> {
    let max_deliveries = client.subscribe(subjects::MAX_DELIVERIES_ADVISORY).await?;
    let terminated = client.subscribe(subjects::TERMINATED_ADVISORY).await?;
    let tagged = futures::stream::select(
        max_deliveries.map(|m| (true, m)),
        terminated.map(|m| (false, m)),
    );
    Ok(async move {
        tokio::pin!(tagged);
        while let Some((exhausted, msg)) = tagged.next().await {
            let Ok(advisory) = serde_json::from_slice::<Advisory>(&msg.payload) else {
                tracing::warn!(subject = %msg.subject, "unreadable advisory");
                continue;
            };
            let seq = advisory.stream_seq;
            // Only a given-up batch is read or removed.
            let tasks = match exhausted {
                true => js.get_stream(subjects::TASK_STREAM).await.ok(),
                false => None,
            };
            let mut remove = match &tasks {
                Some(tasks) => exhaust_async(tasks, &deferred, seq, advisory.deliveries).await,
                None => false,
            };
            if let Some(requests) = stored.abandoned(seq) {
                tracing::warn!(
                    stream_seq = seq,
                    attempts = advisory.deliveries,
                    requests = requests.len(),
                    exhausted,
                    "JetStream gave up on a batch"
                );
                for id in requests {
                    waiters.answer(
                        id,
                        Reply::Abandoned {
                            attempts: advisory.deliveries,
                            exhausted,
                        },
                    );
                }
                remove |= exhausted;
            }
            if let Some(stream) = tasks.filter(|_| remove) {
                // A work-queue message past MaxDeliver stays stored forever otherwise.
                if let Err(e) = stream.delete_message(seq).await {
                    tracing::debug!(error = %e, "given-up batch already gone");
                }
            }
        }
    })
}

/// Store `retries_exhausted` for the async requests of the given-up batch
/// at `seq`; true when it had any and all were stored (then this gateway
/// removes the batch, whoever published it). A batch already gone was
/// handled by another gateway.
async fn exhaust_async(
    tasks: &async_nats::jetstream::stream::Stream,
    deferred: &AsyncResults,
    seq: u64,
    attempts: u64,
) -> bool {
    let Ok(message) = tasks.get_raw_message(seq).await else {
        return false;
    };
    let Ok(batch) = protocol::decode::<TaskBatch>(&message.payload) else {
        return false;
    };
    let ids: Vec<_> = (batch.items.iter())
        .filter(|i| i.deferred.is_some())
        .map(|i| i.request_id)
        .collect();
    if ids.is_empty() {
        return false;
    }
    tracing::warn!(
        stream_seq = seq,
        attempts,
        requests = ids.len(),
        "JetStream gave up on async requests"
    );
    let mut stored = true;
    for &id in &ids {
        if let Err(e) = deferred.exhausted(id, attempts).await {
            tracing::warn!(request_id = %id, stream_seq = seq, error = %e,
                "retries_exhausted not stored for an async request; batch kept for another gateway");
            stored = false;
        }
    }
    stored
}
