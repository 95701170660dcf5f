//! Listening to JetStream's advisories about the task stream.
//!
//! When a batch reaches `MAX_DELIVER` without an ack, or a worker terminates
//! it, JetStream publishes an advisory naming its stream sequence. The
//! gateway that published the batch answers its waiting requests at once with
//! the number of attempts.
//!
//! A given-up batch must not vanish: every gateway that hears a
//! max-deliveries advisory reads the batch from the stream, copies it to the
//! dead letters (`INFER_DEAD`, one copy whatever the number of gateways),
//! stores `retries_exhausted` as the answer of each async request in it
//! (unless it has one), and only then deletes it from the work queue, so
//! both survive the gateway that took the requests. (A batch a worker
//! terminates, malformed or expired, was copied by that worker.) The copy
//! names the worker that last had the batch and the last error reported for
//! it ([`crate::deliveries`]), or says that no delivery was ever answered.

use crate::deferred::AsyncResults;
use crate::deliveries::Deliveries;
use crate::stored_batches::StoredBatches;
use crate::waiters::{Reply, Waiters};
use async_nats::jetstream::message::StreamMessage;
use futures::StreamExt;
use jetinfer_shared::dead;
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
    deliveries: Deliveries,
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
            // Only a given-up batch is read, copied to the dead letters and removed.
            let tasks = match exhausted {
                true => js.get_stream(subjects::TASK_STREAM).await.ok(),
                false => None,
            };
            let message = match &tasks {
                Some(tasks) => tasks.get_raw_message(seq).await.ok(),
                None => None,
            };
            let remove = match &message {
                Some(message) => {
                    let buried = bury(&js, message, advisory.deliveries, &deliveries).await;
                    let answered = exhaust_async(&deferred, message, advisory.deliveries).await;
                    buried && answered != Some(false)
                }
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

/// Copy the given-up batch `message` to the dead letters (as exhausted),
/// with what `deliveries` knows of its last worker and error; true once it
/// is there (from this gateway or another: the copy's id is the batch's
/// sequence, so JetStream keeps one).
async fn bury(
    js: &async_nats::jetstream::Context,
    message: &StreamMessage,
    attempts: u64,
    deliveries: &Deliveries,
) -> bool {
    let last = (message.headers.get(subjects::HEADER_BATCH_ID))
        .and_then(|id| id.as_str().parse().ok())
        .and_then(|id| deliveries.last(id));
    let error = last.as_ref().and_then(|l| l.error.clone()).unwrap_or_else(|| {
        format!("no delivery of {attempts} was answered within the ack wait (the worker hung, crashed or lost its connection)")
    });
    let letter = dead::Letter {
        reason: dead::Reason::Exhausted,
        stream_seq: message.sequence,
        subject: message.subject.as_str(),
        attempts,
        worker: last.as_ref().map(|l| l.worker.as_str()),
        error: Some(&error),
    };
    match dead::bury(js, &letter, message.payload.clone()).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(stream_seq = message.sequence, error = %e,
                "given-up batch not copied to the dead letters; kept in the work queue");
            false
        }
    }
}

/// Store `retries_exhausted` for the async requests of the given-up batch
/// `message`: `None` when it has none, else whether all were stored (if
/// not, the batch stays for another gateway to try).
async fn exhaust_async(
    deferred: &AsyncResults,
    message: &StreamMessage,
    attempts: u64,
) -> Option<bool> {
    let seq = message.sequence;
    let batch = protocol::decode::<TaskBatch>(&message.payload).ok()?;
    let ids: Vec<_> = (batch.items.iter())
        .filter(|i| i.deferred.is_some())
        .map(|i| i.request_id)
        .collect();
    if ids.is_empty() {
        return None;
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
    Some(stored)
}
