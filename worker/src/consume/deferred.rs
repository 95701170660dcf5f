//! Async requests (`POST /infer/async`) on the worker's side: their answers
//! go to the `INFER_RESULTS_KV` bucket, not to a waiting gateway.
//!
//! At admission each async request of a batch is claimed: its entry is
//! rewritten `running` by this worker, conditional on the revision read.
//! A request whose entry is gone (cancelled with `DELETE /result/{id}`, or
//! expired) or already holds an answer (an earlier delivery stored it) is
//! left out of the batch and never computed. After the forward pass the
//! answer is written over the claim, again conditional on its revision: a
//! request cancelled while it computed keeps no answer, and of two workers
//! holding one request (a redelivery after a stall) only the later claim's
//! answer lands. Any other error of the bucket leaves the whole batch to
//! JetStream's redelivery, so an accepted async request is never dropped
//! on a hiccup.

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::{self};
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{
    self, DeferredEntry, DeferredState, ItemResult, ResultBatch, StoredAnswer, TaskBatch,
};
use jetinfer_shared::subjects;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The revision of each async request's `running` claim, by request id: the
/// answer's write expects it.
pub type Claims = HashMap<Uuid, u64>;

/// What claiming a batch's async requests left to compute.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Claims of the async requests kept in the batch.
    pub claims: Claims,
    /// Requests left out because their entry is gone (cancelled or expired).
    pub cancelled: u64,
    /// Requests left out because their answer is already stored.
    pub answered: u64,
}

/// The results bucket as one worker uses it; cheap to clone.
#[derive(Clone)]
pub struct AsyncResults {
    js: jetstream::Context,
    worker_id: String,
    /// Opened at the first async request (the gateway creates the bucket;
    /// this role may only open it).
    bucket: Arc<OnceCell<kv::Store>>,
}

impl AsyncResults {
    /// The bucket through `js`, written as `worker_id`.
    pub fn new(js: jetstream::Context, worker_id: String) -> Self {
        Self {
            js,
            worker_id,
            bucket: Arc::default(),
        }
    }

    async fn bucket(&self) -> Result<&kv::Store, String> {
        self.bucket
            .get_or_try_init(|| self.js.get_key_value(subjects::RESULTS_BUCKET))
            .await
            .map_err(|e| format!("cannot open {}: {e}", subjects::RESULTS_BUCKET))
    }

    /// Claim the async requests of `batch`, removing from it those that must
    /// not be computed. `Err`: the bucket could not be read or written; the
    /// batch must be left to redelivery.
    pub async fn claim(&self, batch: &mut TaskBatch) -> Result<Claimed, String> {
        let mut claimed = Claimed::default();
        if batch.items.iter().all(|i| i.deferred.is_none()) {
            return Ok(claimed);
        }
        let bucket = self.bucket().await?;
        let mut kept = Vec::with_capacity(batch.items.len());
        for item in std::mem::take(&mut batch.items) {
            if item.deferred.is_none() {
                kept.push(item);
                continue;
            }
            let key = item.request_id.to_string();
            match self.claim_one(bucket, &key).await? {
                Standing::Claimed(revision) => {
                    claimed.claims.insert(item.request_id, revision);
                    kept.push(item);
                }
                Standing::Answered => claimed.answered += 1,
                Standing::Cancelled => claimed.cancelled += 1,
            }
        }
        batch.items = kept;
        Ok(claimed)
    }

    /// Rewrite `key`'s entry `running` by this worker, unless it must not
    /// be computed.
    async fn claim_one(&self, bucket: &kv::Store, key: &str) -> Result<Standing, String> {
        let read = |e: &dyn std::fmt::Display| format!("cannot read async request {key}: {e}");
        let Some(entry) = bucket.entry(key).await.map_err(|e| read(&e))? else {
            return Ok(Standing::Cancelled);
        };
        if entry.operation != Operation::Put {
            return Ok(Standing::Cancelled);
        }
        let mut current: DeferredEntry = protocol::decode(&entry.value).map_err(|e| read(&e))?;
        if matches!(current.state, DeferredState::Done(_)) {
            return Ok(Standing::Answered);
        }
        current.state = DeferredState::Running {
            worker_id: self.worker_id.clone(),
            since_ms: now_ms(),
        };
        let value = protocol::encode(&current).map_err(|e| e.to_string())?;
        match bucket.update(key, value.into(), entry.revision).await {
            Ok(revision) => Ok(Standing::Claimed(revision)),
            // Changed since it was read: cancelled, or taken over by another
            // worker's delivery. Either way not this worker's to compute.
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Standing::Cancelled),
            Err(e) => Err(format!("cannot claim async request {key}: {e}")),
        }
    }

    /// Store the answer of every claimed request of `result` over its
    /// claim. A request cancelled (or taken over) meanwhile keeps no
    /// answer. `Err`: an answer could not be stored; the batch must not be
    /// acked.
    pub async fn store(
        &self,
        batch: &TaskBatch,
        claims: &Claims,
        result: &ResultBatch,
    ) -> Result<(), String> {
        if claims.is_empty() {
            return Ok(());
        }
        let bucket = self.bucket().await?;
        let stores = batch.items.iter().zip(&result.items).filter_map(|(item, answer)| {
            let tag = item.deferred?;
            let revision = *claims.get(&item.request_id)?;
            Some(async move {
                let entry = DeferredEntry {
                    task: batch.task,
                    accepted_ms: tag.accepted_ms,
                    state: DeferredState::Done(self.answer(result, answer, tag.accepted_ms)),
                };
                let value = protocol::encode(&entry).map_err(|e| e.to_string())?;
                let key = answer.request_id.to_string();
                match bucket.update(&key, value.into(), revision).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        tracing::info!(request_id = %answer.request_id, batch_id = %batch.batch_id,
                            "async request cancelled while it computed; its answer is dropped");
                        Ok(())
                    }
                    Err(e) => Err(format!("cannot store async answer {key}: {e}")),
                }
            })
        });
        futures::future::join_all(stores)
            .await
            .into_iter()
            .collect()
    }

    fn answer(&self, result: &ResultBatch, answer: &ItemResult, accepted_ms: u64) -> StoredAnswer {
        StoredAnswer::Computed {
            worker_id: self.worker_id.clone(),
            model: result.model.clone(),
            attempt: result.attempt,
            outcome: answer.outcome.clone(),
            latency_ms: now_ms().saturating_sub(accepted_ms) as f64,
        }
    }
}

/// Where one async request stands once admission looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// This worker's claim, at this revision: compute it.
    Claimed(u64),
    /// Its answer is already stored: leave it out.
    Answered,
    /// Its entry is gone (cancelled, expired) or changed under this worker
    /// (cancelled, or claimed by another delivery): leave it out.
    Cancelled,
}
