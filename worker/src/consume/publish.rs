//! Result publish: the answer is stored in the result stream before the task
//! is acked, so an ack always means "the gateway can have this answer".
//!
//! A result never exceeds the server's `max_payload` (a message over it would
//! make the server close this worker's connection): a batch's results are
//! split over as many messages as they need, and one request whose answer
//! alone cannot fit gets [`ItemOutcome::TooLarge`] instead, at once.
//!
//! A request sent with an `Idempotency-Key` has its answer stored in the
//! `INFER_IDEMPOTENCY` bucket first, so the answer survives the gateway that
//! took the request and any gateway can give it to the client's retry. That
//! store is best effort: the result is published whether it worked or not.
//!
//! The answers of async requests (`POST /infer/async`) go to the results
//! bucket instead ([`super::deferred`]), and must be stored there before
//! the ack: they are left out of the published result, which the gateway
//! still receives (possibly empty) to know the batch was answered.

use super::deferred::{AsyncResults, Claims};
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, kv};
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{
    self, IdempotencyEntry, ItemOutcome, ItemResult, KeyState, ResultBatch, StoredAnswer, TaskBatch,
};
use jetinfer_shared::store;
use jetinfer_shared::subjects;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Publishes results with a JetStream ack.
#[derive(Clone)]
pub struct ResultPublisher {
    js: jetstream::Context,
    worker_id: String,
    /// The `Idempotency-Key` bucket, opened at the first keyed request (the
    /// gateway creates it; this role may only open it).
    answers: Arc<OnceCell<kv::Store>>,
    /// Where the answers of async requests go.
    deferred: AsyncResults,
}

impl ResultPublisher {
    /// Results of `worker_id` (sent in the `Jetinfer-Worker` header) through
    /// `js`; async answers into `deferred`.
    pub fn new(js: jetstream::Context, worker_id: String, deferred: AsyncResults) -> Self {
        Self {
            js,
            worker_id,
            answers: Arc::default(),
            deferred,
        }
    }

    /// Publish `result` to `batch`'s reply subject, in as many messages as it
    /// takes, and wait until JetStream stored every one. An answer too large to
    /// travel alone is replaced in `result` by [`ItemOutcome::TooLarge`]. The
    /// answers of keyed requests are stored under their keys before that,
    /// and those of async requests (claimed in `claims`) in the results
    /// bucket, instead of being published.
    pub async fn publish(
        &self,
        batch: &TaskBatch,
        claims: &Claims,
        result: &mut ResultBatch,
    ) -> Result<(), String> {
        let limit = protocol::item_budget(self.js.client().server_info().max_payload);
        let parts = split(result, limit, claims)?;
        self.remember(batch, result).await;
        self.deferred.store(batch, claims, result).await?;
        for part in parts {
            self.publish_part(batch, &part).await?;
        }
        Ok(())
    }

    /// Store the answer of every keyed request of `batch` under its key. A
    /// failure is logged and the result still goes out: the waiting client
    /// gets its answer, only a retry after its gateway died computes again.
    async fn remember(&self, batch: &TaskBatch, result: &ResultBatch) {
        let keyed: Vec<_> = batch
            .items
            .iter()
            .zip(&result.items)
            .filter_map(|(item, answer)| Some((item.idempotency.as_ref()?, answer)))
            .collect();
        if keyed.is_empty() {
            return;
        }
        let opened = self
            .answers
            .get_or_try_init(|| self.js.get_key_value(subjects::IDEMPOTENCY_BUCKET))
            .await;
        let store = match opened {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!(batch_id = %batch.batch_id, requests = keyed.len(), error = %e,
                    "cannot open the idempotency bucket; answers not stored under their keys");
                return;
            }
        };
        let puts = keyed.into_iter().map(|(tag, answer)| async move {
            let entry = IdempotencyEntry {
                body_hash: tag.body_hash.clone(),
                request_id: answer.request_id,
                state: KeyState::Done(StoredAnswer::Computed {
                    worker_id: self.worker_id.clone(),
                    model: result.model.clone(),
                    attempt: result.attempt,
                    outcome: answer.outcome.clone(),
                    latency_ms: now_ms().saturating_sub(tag.accepted_ms) as f64,
                }),
            };
            let stored = match protocol::encode(&entry) {
                Ok(value) => store
                    .put(&tag.key, value.into())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = stored {
                tracing::warn!(request_id = %answer.request_id, batch_id = %batch.batch_id,
                    error = %error, "answer not stored under its Idempotency-Key");
            }
        });
        futures::future::join_all(puts).await;
    }

    /// Send one result message straight to its gateway (core NATS, no
    /// wait), then store it, riding out a lost acknowledgement or a
    /// result-stream leader election ([`store::until_stored`]); its message id
    /// (batch, delivery, first request) lets JetStream drop a resent copy.
    /// The gateway answers with whichever copy comes first; only the stored
    /// one is waited for, so a lost direct copy costs the client an fsync.
    async fn publish_part(&self, batch: &TaskBatch, part: &ResultBatch) -> Result<(), String> {
        let body: bytes::Bytes = protocol::encode(part).map_err(|e| e.to_string())?.into();
        let mut headers = subjects::payload_headers(&batch.batch_id, part.items.len());
        headers.insert(subjects::HEADER_WORKER, self.worker_id.as_str());
        let first = part.items.first().map(|i| i.request_id.to_string());
        let id = format!(
            "{}/{}/{}",
            batch.batch_id,
            part.attempt,
            first.as_deref().unwrap_or("-")
        );
        headers.insert(NATS_MESSAGE_ID, id.as_str());
        if let Some(direct) = subjects::direct_of(&batch.reply_subject) {
            let sent = (self.js.client())
                .publish_with_headers(direct, headers.clone(), body.clone())
                .await;
            if let Err(e) = sent {
                tracing::debug!(batch_id = %batch.batch_id, error = %e, "direct copy not sent");
            }
        }
        store::until_stored(
            &self.js,
            batch.reply_subject.clone(),
            headers,
            body,
            batch.deadline_ms,
            || (),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Cut `result` into messages whose items take at most `limit` bytes each,
/// in order; an item over `limit` on its own becomes `TooLarge` (in `result`
/// too, so the worker reports what the client will see, and the results
/// bucket stores it). The items of `deferred` (async requests) are left out
/// of the messages; there is always at least one, possibly empty.
fn split(
    result: &mut ResultBatch,
    limit: usize,
    deferred: &Claims,
) -> Result<Vec<ResultBatch>, String> {
    let mut groups: Vec<Vec<ItemResult>> = vec![Vec::new()];
    let mut used = 0;
    for item in &mut result.items {
        let mut size = encoded_len(item)?;
        if size > limit {
            item.outcome = ItemOutcome::TooLarge {
                size: size as u64,
                limit: limit as u64,
            };
            size = encoded_len(item)?;
        }
        if deferred.contains_key(&item.request_id) {
            continue;
        }
        if used + size > limit && groups.last().is_some_and(|g| !g.is_empty()) {
            groups.push(Vec::new());
            used = 0;
        }
        used += size;
        if let Some(group) = groups.last_mut() {
            group.push(item.clone());
        }
    }
    Ok(groups
        .into_iter()
        .map(|items| ResultBatch {
            batch_id: result.batch_id,
            worker_id: result.worker_id.clone(),
            model: result.model.clone(),
            attempt: result.attempt,
            compute_ms: result.compute_ms,
            items,
        })
        .collect())
}

fn encoded_len(item: &ItemResult) -> Result<usize, String> {
    protocol::encode(item)
        .map(|b| b.len())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_shared::protocol::TaskOutput;

    fn result(texts: &[usize]) -> ResultBatch {
        ResultBatch {
            batch_id: uuid::Uuid::from_u128(9),
            worker_id: "w".into(),
            model: "m".into(),
            attempt: 1,
            compute_ms: 1.0,
            items: texts
                .iter()
                .enumerate()
                .map(|(i, &n)| ItemResult {
                    request_id: uuid::Uuid::from_u128(i as u128),
                    outcome: ItemOutcome::Ok(TaskOutput::Echo {
                        echo: "e".repeat(n),
                    }),
                    tokens: 0,
                })
                .collect(),
        }
    }

    fn sizes(parts: &[ResultBatch]) -> Vec<Vec<u128>> {
        parts
            .iter()
            .map(|p| p.items.iter().map(|i| i.request_id.as_u128()).collect())
            .collect()
    }

    #[test]
    fn results_are_split_in_order_under_the_limit() {
        let mut r = result(&[400, 400, 400, 10]);
        let one = encoded_len(&r.items[0]).unwrap();
        let parts = split(&mut r, one * 2 + 5, &Claims::new()).unwrap();
        assert_eq!(sizes(&parts), vec![vec![0, 1], vec![2, 3]]);
        for part in &parts {
            let items: usize = part.items.iter().map(|i| encoded_len(i).unwrap()).sum();
            assert!(items <= one * 2 + 5);
        }
        assert_eq!(
            sizes(&split(&mut result(&[1, 1]), 10_000, &Claims::new()).unwrap()),
            vec![vec![0, 1]]
        );
        assert_eq!(
            split(&mut result(&[]), 100, &Claims::new()).unwrap().len(),
            1,
            "an empty batch still answers"
        );
    }

    #[test]
    fn async_answers_are_left_out_and_an_empty_result_still_goes() {
        let claims = |ids: &[u128]| -> Claims {
            ids.iter().map(|&i| (uuid::Uuid::from_u128(i), 1)).collect()
        };
        let mut r = result(&[10, 10, 10]);
        assert_eq!(
            sizes(&split(&mut r, 10_000, &claims(&[1])).unwrap()),
            vec![vec![0, 2]]
        );
        assert_eq!(r.items.len(), 3, "the worker still reports all three");
        let mut r = result(&[10, 10]);
        assert_eq!(
            sizes(&split(&mut r, 10_000, &claims(&[0, 1])).unwrap()),
            vec![Vec::<u128>::new()],
            "the gateway still learns the batch was answered"
        );
    }

    #[test]
    fn an_answer_too_large_alone_becomes_too_large_and_the_rest_travel() {
        let mut r = result(&[10, 5000, 10]);
        let parts = split(&mut r, 1000, &Claims::new()).unwrap();
        assert_eq!(sizes(&parts), vec![vec![0, 1, 2]]);
        assert!(matches!(
            r.items[1].outcome,
            ItemOutcome::TooLarge { size, limit: 1000 } if size > 5000
        ));
        assert_eq!(parts[0].items[1].outcome, r.items[1].outcome);
        assert!(matches!(r.items[0].outcome, ItemOutcome::Ok(_)));
    }
}
