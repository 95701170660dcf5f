//! The results bucket (`INFER_RESULTS_KV`) as a gateway uses it: the entry
//! of an async request (`POST /infer/async`) is created here before the
//! request is queued, read by whichever gateway `GET /result/{id}` reaches,
//! and deleted by `DELETE /result/{id}`. Workers write `running` and the
//! answer (`protocol::DeferredState`); a gateway writes the answer itself
//! only when JetStream gave up on the request (every delivery failed).

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use jetinfer_shared::protocol::{self, DeferredEntry, DeferredState, StoredAnswer, Task};
use uuid::Uuid;

/// Why the results bucket did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[error("the results bucket (INFER_RESULTS_KV) failed: {0}")]
pub struct BucketError(String);

fn failed(e: impl std::fmt::Display) -> BucketError {
    BucketError(e.to_string())
}

/// Handle to the results bucket; cheap to clone.
#[derive(Clone)]
pub struct AsyncResults {
    kv: kv::Store,
    gateway_id: String,
}

impl AsyncResults {
    /// The bucket `kv`, entries created by `gateway_id`.
    pub fn new(kv: kv::Store, gateway_id: String) -> Self {
        Self { kv, gateway_id }
    }

    /// Create the `queued` entry of a new async request.
    pub async fn create(&self, id: Uuid, task: Task, accepted_ms: u64) -> Result<(), BucketError> {
        let entry = DeferredEntry {
            task,
            accepted_ms,
            state: DeferredState::Queued {
                gateway_id: self.gateway_id.clone(),
            },
        };
        let value = protocol::encode(&entry).map_err(failed)?;
        self.kv
            .create(id.to_string(), value.into())
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// The entry of `id` with its revision; `None` when there is none
    /// (never created, expired, or deleted).
    pub async fn get(&self, id: Uuid) -> Result<Option<(DeferredEntry, u64)>, BucketError> {
        let Some(entry) = self.kv.entry(id.to_string()).await.map_err(failed)? else {
            return Ok(None);
        };
        if entry.operation != Operation::Put {
            return Ok(None);
        }
        let value = protocol::decode(&entry.value).map_err(failed)?;
        Ok(Some((value, entry.revision)))
    }

    /// Delete the entry of `id` (cancel or forget it): what it was, `None`
    /// when there was none.
    pub async fn delete(&self, id: Uuid) -> Result<Option<DeferredEntry>, BucketError> {
        let Some((entry, _)) = self.get(id).await? else {
            return Ok(None);
        };
        // Unconditional: whatever it became since, a worker's later write
        // (the claim or the answer, each expecting the revision it read)
        // now fails, so the request is neither computed nor answered.
        self.kv.delete(id.to_string()).await.map_err(failed)?;
        Ok(Some(entry))
    }

    /// Drop the entry of a request that never reached the queue (its
    /// publish failed; the client was told 503).
    pub async fn discard(&self, id: Uuid) {
        if let Err(e) = self.kv.delete(id.to_string()).await {
            tracing::warn!(request_id = %id, error = %e, "entry of an unqueued async request not deleted; it expires with ASYNC_RESULT_TTL_S");
        }
    }

    /// Store that JetStream gave up on `id` after `attempts` deliveries,
    /// unless an answer is already there (or the entry is gone).
    pub async fn exhausted(&self, id: Uuid, attempts: u64) -> Result<(), BucketError> {
        loop {
            let Some((mut entry, revision)) = self.get(id).await? else {
                return Ok(());
            };
            if matches!(entry.state, DeferredState::Done(_)) {
                return Ok(());
            }
            entry.state = DeferredState::Done(StoredAnswer::Exhausted { attempts });
            let value = protocol::encode(&entry).map_err(failed)?;
            match self.kv.update(id.to_string(), value.into(), revision).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(failed(e)),
            }
        }
    }
}
