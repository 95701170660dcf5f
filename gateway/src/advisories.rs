//! Listening to JetStream's advisories about the task stream.
//!
//! When a batch reaches `MAX_DELIVER` without an ack, or a worker terminates
//! it, JetStream publishes an advisory naming its stream sequence. The
//! gateway that published the batch answers its waiting requests at once with
//! the number of attempts, and removes a given-up batch from the work queue.

use crate::stored_batches::StoredBatches;
use crate::waiters::{Reply, Waiters};
use futures::StreamExt;
use jetinfer_shared::subjects;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Advisory {
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

/// Subscribe to the advisories; the returned future runs until the connection closes.
pub async fn watch(
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    stored: StoredBatches,
    waiters: Waiters,
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
            let Some(requests) = stored.abandoned(advisory.stream_seq) else {
                continue; // another gateway's batch, or already answered
            };
            tracing::warn!(
                stream_seq = advisory.stream_seq,
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
            if exhausted {
                // A work-queue message past MaxDeliver stays stored forever otherwise.
                if let Ok(stream) = js.get_stream(subjects::TASK_STREAM).await {
                    if let Err(e) = stream.delete_message(advisory.stream_seq).await {
                        tracing::debug!(error = %e, "given-up batch already gone");
                    }
                }
            }
        }
    })
}
