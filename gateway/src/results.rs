//! Routing results to waiting requests.
//!
//! Each result arrives twice: straight from the worker on
//! `infer.direct.<gateway-id>` (core NATS, sent the moment it is computed),
//! and stored in the `INFER_RESULTS` stream on `infer.result.<gateway-id>`,
//! read through an ordered consumer filtered to this gateway's subject. The
//! first copy to arrive answers; the direct one saves the client the result's
//! fsync. The stored one is what makes answers safe: a worker acks its task
//! only after the result is stored there, so whatever happens to this
//! gateway's connection (a reconnect, a slow-consumer kick, a server
//! restart) the consumer resumes after the last result it delivered and no
//! computed answer is lost, whether or not its direct copy arrived.
//!
//! Both copies carry the same `Nats-Msg-Id` (batch, delivery, first
//! request), so the second is known by it and dropped before it is decoded,
//! whatever the first did. The first result for a request wins: a result of
//! another delivery (a redelivered batch that was computed twice) finds no
//! waiter and is counted as a dropped duplicate. A result for a request
//! given up on (timed out, client gone) is late, not a duplicate, and is
//! only logged.

use crate::report::Report;
use crate::stored_batches::StoredBatches;
use crate::waiters::{Reply, Waiters};
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, stream};
use futures::stream::BoxStream;
use futures::StreamExt;
use jetinfer_shared::protocol::{self, ResultBatch};
use jetinfer_shared::subjects;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// The result consumer could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot read results from {}: {reason}", subjects::RESULT_STREAM)]
pub struct ResultsError {
    reason: String,
}

fn failed(e: impl std::fmt::Display) -> ResultsError {
    ResultsError {
        reason: e.to_string(),
    }
}

/// One copy of a result message.
pub struct ResultCopy {
    /// Its `Nats-Msg-Id`, the same on both copies (none from a publisher
    /// that is not one of our workers).
    id: Option<String>,
    /// The `ResultBatch`, MessagePack.
    payload: bytes::Bytes,
}

impl ResultCopy {
    /// A copy that arrived as `payload` with `headers`.
    fn of(headers: Option<&async_nats::HeaderMap>, payload: bytes::Bytes) -> Self {
        let id = headers
            .and_then(|h| h.get(NATS_MESSAGE_ID))
            .map(|id| id.as_str().to_owned());
        Self { id, payload }
    }
}

/// The results of `gateway_id` from now on, both copies of each: the direct
/// ones as they come, the stored ones in order; the ordered consumer
/// re-creates itself after the last delivered result whenever it is lost.
pub async fn subscribe(
    client: &async_nats::Client,
    js: &jetstream::Context,
    gateway_id: &str,
) -> Result<BoxStream<'static, ResultCopy>, ResultsError> {
    let direct = client
        .subscribe(subjects::direct_subject(gateway_id))
        .await
        .map_err(failed)?;
    let mut js = js.clone();
    js.set_timeout(RESULT_READER_REQUESTS);
    let stream: stream::Stream = js
        .get_stream(subjects::RESULT_STREAM)
        .await
        .map_err(failed)?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            name: Some(format!("results-{gateway_id}")),
            filter_subject: subjects::result_subject(gateway_id),
            deliver_policy: DeliverPolicy::New,
            max_expires: RESULT_PULL_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(failed)?;
    let stored: Ordered = consumer.messages().await.map_err(failed)?;
    let stored = stored.filter_map(|msg| async move {
        match msg {
            Ok(msg) => Some(ResultCopy::of(msg.headers.as_ref(), msg.payload.clone())),
            Err(e) => {
                // The ordered consumer re-creates itself; keep reading.
                tracing::warn!(error = %e, "result stream interrupted");
                None
            }
        }
    });
    let direct = direct.map(|msg| ResultCopy::of(msg.headers.as_ref(), msg.payload));
    Ok(futures::stream::select(direct, stored).boxed())
}

/// The longest pull the result reader makes. The reader's consumer lives on
/// one server (R1, in memory); if that server dies, the reader learns it
/// only from two missed idle heartbeats, which async-nats sends at half the
/// pull's expiry: its default 30 s pull left a gateway without answers for a
/// minute after a cluster node was killed, a 1 s one re-creates the reader
/// on a live node within about 2 s. The cost is one pull a second.
const RESULT_PULL_EXPIRES: Duration = Duration::from_secs(1);

/// How long each JetStream API request of the result reader may take. When
/// it re-creates itself, async-nats first deletes the lost consumer, a
/// request the dead node never answers: with its 10 s default, re-creating
/// took 15 s in all; each retry of the creation then waits this long too.
const RESULT_READER_REQUESTS: Duration = Duration::from_secs(1);

/// Route every result of `results` to its waiters, until the stream ends.
pub async fn route(
    mut results: BoxStream<'static, ResultCopy>,
    waiters: Waiters,
    stored: StoredBatches,
    report: Arc<Report>,
) {
    let mut routed = Routed::default();
    while let Some(copy) = results.next().await {
        if copy.id.is_some_and(|id| !routed.insert(id)) {
            // The other copy of a message already routed.
            continue;
        }
        let batch: ResultBatch = match protocol::decode(&copy.payload) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "malformed result dropped");
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
                tokens: item.tokens,
            };
            if waiters.answer(item.request_id, reply) {
                continue;
            }
            if waiters.gave_up_on(item.request_id) {
                report.late_result(item.request_id, batch.batch_id, &batch.worker_id);
            } else {
                report.duplicate_result(item.request_id, batch.batch_id, &batch.worker_id);
            }
        }
    }
}

/// The message ids routed lately, so the second copy of each is known for
/// what it is; the oldest are forgotten past [`ROUTED_KEPT`], long after
/// their other copy came.
#[derive(Default)]
struct Routed {
    set: HashSet<String>,
    order: VecDeque<String>,
}

/// Routed messages remembered: minutes of results at 400 batches/s.
const ROUTED_KEPT: usize = 65_536;

impl Routed {
    /// Remember message `id`; false when it was routed already.
    fn insert(&mut self, id: String) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        if self.order.len() == ROUTED_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_second_copy_is_known_and_the_oldest_messages_are_forgotten_first() {
        let mut routed = Routed::default();
        // As a worker names a result: batch, delivery, first request.
        let (batch, request) = (Uuid::new_v4(), Uuid::new_v4());
        let id = |attempt: u64| format!("{batch}/{attempt}/{request}");
        let other = || format!("{}/1/{}", Uuid::new_v4(), Uuid::new_v4());
        let first = id(1);
        assert!(routed.insert(first.clone()));
        assert!(!routed.insert(first.clone()), "the second copy");
        assert!(routed.insert(id(2)), "a redelivery is another message");
        for _ in 2..ROUTED_KEPT {
            routed.insert(other());
        }
        assert!(!routed.insert(first.clone()), "kept while there is room");
        routed.insert(other());
        assert!(routed.insert(first), "the oldest goes first");
        assert_eq!(routed.set.len(), ROUTED_KEPT);
    }
}
