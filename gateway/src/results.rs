//! Routing results from `infer.result.<gateway-id>` to waiting requests.
//!
//! Results are read from the `INFER_RESULTS` stream through an ordered
//! consumer filtered to this gateway's subject, not from a core subscription:
//! a worker acks its task only after the result is stored there, so whatever
//! happens to this gateway's connection (a reconnect, a slow-consumer kick, a
//! server restart) the consumer resumes after the last result it delivered
//! and no computed answer is lost.
//!
//! The first result for a request wins; a later one (a redelivered batch that
//! was computed twice) finds no waiter and is counted as a dropped duplicate.
//! A result for a request given up on (timed out, client gone) is late, not a
//! duplicate, and is only logged.

use crate::report::Report;
use crate::stored_batches::StoredBatches;
use crate::waiters::{Reply, Waiters};
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use jetinfer_shared::protocol::{self, ResultBatch};
use jetinfer_shared::subjects;
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

/// The results of `gateway_id` stored from now on, in order; the consumer
/// re-creates itself after the last delivered result whenever it is lost.
pub async fn subscribe(js: &jetstream::Context, gateway_id: &str) -> Result<Ordered, ResultsError> {
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
    consumer.messages().await.map_err(failed)
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
    mut results: Ordered,
    waiters: Waiters,
    stored: StoredBatches,
    report: Arc<Report>,
) {
    while let Some(msg) = results.next().await {
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                // The ordered consumer re-creates itself; keep reading.
                tracing::warn!(error = %e, "result stream interrupted");
                continue;
            }
        };
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
