//! Safe retries: requests sent with an `Idempotency-Key`, kept in the
//! `INFER_IDEMPOTENCY` bucket so that the same key within `IDEMPOTENCY_TTL_S`
//! gets the same answer and the model runs once, whichever gateway the retry
//! reaches and whether or not the first one is still alive.
//!
//! A request claims its key with a compare-and-set create (a `Pending`
//! entry); the publisher records the batch's stream sequence in it; the worker
//! stores the answer (`Done`) before it publishes the result, and the gateway
//! stores it again with the latency it measured. A retry that finds the key
//! replays the answer, waits (a watch on the key, at most its own timeout) or,
//! under the rules of [`rules`], takes the claim over and runs the request.
//! Every write after the claim is a compare-and-set on the revision read, so
//! a claim is never overwritten by someone who did not see it.

pub mod rules;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use futures::StreamExt;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{self, IdempotencyEntry, IdempotencyTag, KeyState, StoredAnswer};
use rules::Verdict;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// How often a waiting retry reads the key again even when its watch saw no
/// change: takeover rules 2 and 3 become true without a write to the key.
const RECHECK: Duration = Duration::from_secs(1);

/// Why a keyed request gets no claim and no stored answer.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key was claimed with another body.
    #[error("this Idempotency-Key was used with another request body")]
    Reused,
    /// The request under the key was not answered within the retry's own timeout.
    #[error("the request under this Idempotency-Key is still computing")]
    StillComputing {
        /// The request that holds the key.
        request_id: Uuid,
    },
    /// The bucket could not be read or written.
    #[error("the idempotency bucket is unavailable: {0}")]
    Unavailable(String),
}

/// A keyed request's claim: what it runs under and what it must write back.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Key, body hash and acceptance time; travels in the task item.
    pub tag: IdempotencyTag,
    /// The request that runs under the key.
    pub request_id: Uuid,
    /// Revision of the claim in the bucket: the publisher's update expects it.
    pub revision: u64,
}

/// What a keyed request does.
#[derive(Debug)]
pub enum Begin {
    /// Run it under this claim (a new key, or one taken over).
    Run(Claim),
    /// Answer it with what the key holds.
    Replay {
        /// The request that computed the answer.
        request_id: Uuid,
        /// The answer.
        answer: StoredAnswer,
    },
}

/// The bucket and the task stream, as the gateway's requests and publisher use them.
#[derive(Clone)]
pub struct Idempotency {
    kv: kv::Store,
    tasks: Stream,
    gateway_id: String,
}

impl Idempotency {
    /// Requests keyed in `kv`, claimed as `gateway_id`; `tasks` is
    /// `INFER_TASKS`, where a claim's batch is looked up by sequence.
    pub fn new(kv: kv::Store, tasks: Stream, gateway_id: String) -> Self {
        Self {
            kv,
            tasks,
            gateway_id,
        }
    }

    /// Claim `key` (a [`protocol::kv_key`]) for `request_id`, whose body
    /// hashes to `body_hash`, or find out what its earlier request left: an
    /// answer to replay, a computation to wait for (until `deadline`), a
    /// claim to take over, or another body (`Reused`).
    pub async fn begin(
        &self,
        key: String,
        body_hash: String,
        request_id: Uuid,
        deadline: Instant,
    ) -> Result<Begin, KeyError> {
        let tag = IdempotencyTag {
            key,
            body_hash,
            accepted_ms: now_ms(),
        };
        let key = tag.key.as_str();
        let mut watching = Watching::default();
        let mut waited = false;
        'claim: loop {
            match self.kv.create(key, self.pending(&tag, request_id)?).await {
                Ok(revision) => return Ok(self.run(tag, request_id, revision, "new")),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(unavailable(e)),
            }
            loop {
                let entry = self.kv.entry(key).await.map_err(unavailable)?;
                let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                    continue 'claim; // released or expired since: claim it again
                };
                let found = protocol::decode::<IdempotencyEntry>(&entry.value).ok();
                let holder = found.as_ref().map_or(Uuid::nil(), |f| f.request_id);
                let take_over = match rules::judge(found.as_ref(), &tag.body_hash, now_ms()) {
                    Verdict::Reused => {
                        crate::metrics::idempotent("reused");
                        return Err(KeyError::Reused);
                    }
                    Verdict::Replay(answer) => {
                        crate::metrics::idempotent(if waited { "waited" } else { "replayed" });
                        return Ok(Begin::Replay {
                            request_id: holder,
                            answer,
                        });
                    }
                    Verdict::TakeOver => true,
                    Verdict::WaitUnlessGone(seq) => !self.still_queued(seq).await,
                    Verdict::Wait => false,
                };
                if take_over {
                    let pending = self.pending(&tag, request_id)?;
                    match self.kv.update(key, pending, entry.revision).await {
                        Ok(revision) => {
                            tracing::info!(request_id = %request_id, previous = %holder,
                                "Idempotency-Key taken over: its request will not be answered");
                            return Ok(self.run(tag, request_id, revision, "takeover"));
                        }
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(unavailable(e)),
                    }
                }
                if Instant::now() >= deadline {
                    return Err(KeyError::StillComputing { request_id: holder });
                }
                waited = true;
                let until = deadline.min(Instant::now() + RECHECK);
                watching.changed(&self.kv, key, until).await;
            }
        }
    }

    fn run(
        &self,
        tag: IdempotencyTag,
        request_id: Uuid,
        revision: u64,
        outcome: &'static str,
    ) -> Begin {
        crate::metrics::idempotent(outcome);
        Begin::Run(Claim {
            tag,
            request_id,
            revision,
        })
    }

    /// The claim of `request_id` under `tag`, as this gateway writes it.
    fn pending(&self, tag: &IdempotencyTag, request_id: Uuid) -> Result<bytes::Bytes, KeyError> {
        self.encode(tag, request_id, self.claimed(tag, None))
    }

    fn claimed(&self, tag: &IdempotencyTag, published: Option<u64>) -> KeyState {
        KeyState::Pending {
            gateway_id: self.gateway_id.clone(),
            since_ms: tag.accepted_ms,
            published,
        }
    }

    fn encode(
        &self,
        tag: &IdempotencyTag,
        request_id: Uuid,
        state: KeyState,
    ) -> Result<bytes::Bytes, KeyError> {
        let entry = IdempotencyEntry {
            body_hash: tag.body_hash.clone(),
            request_id,
            state,
        };
        protocol::encode(&entry)
            .map(Into::into)
            .map_err(|e| KeyError::Unavailable(e.to_string()))
    }

    /// Is the batch at `seq` still in `INFER_TASKS`? In doubt (the lookup
    /// failed), yes: a retry waits rather than compute a request twice.
    async fn still_queued(&self, seq: u64) -> bool {
        match self.tasks.get_raw_message(seq).await {
            Ok(_) => true,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => false,
            Err(e) => {
                tracing::debug!(seq, error = %e, "cannot look up a keyed batch; waiting");
                true
            }
        }
    }

    /// JetStream stored the batch of `claims` at `seq`: record it in each
    /// claim, so a retry can tell a batch still queued from a lost one. A
    /// claim that changed since (its worker already stored the answer, or a
    /// retry took it over) is left as it is.
    pub async fn published(&self, claims: Vec<(Uuid, IdempotencyTag, u64)>, seq: u64) {
        let updates = claims
            .into_iter()
            .map(|(request_id, tag, revision)| async move {
                let value = self.encode(&tag, request_id, self.claimed(&tag, Some(seq)))?;
                match self.kv.update(&tag.key, value, revision).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
                    Err(e) => Err(unavailable(e)),
                }
                .inspect_err(|e| {
                    tracing::warn!(request_id = %request_id, seq, error = %e,
                "batch sequence not recorded under its Idempotency-Key")
                })
            });
        futures::future::join_all(updates).await;
    }

    /// Store `answer` for the request of `claim`, unless the key now belongs
    /// to another request (taken over). A worker stored the same answer
    /// already if it computed it; this one carries the latency the client
    /// was told, so a later replay repeats the body exactly.
    pub async fn finish(&self, claim: &Claim, answer: StoredAnswer) {
        let key = claim.tag.key.as_str();
        let stored = async {
            let Some(entry) = self.kv.entry(key).await.map_err(unavailable)? else {
                return Ok(()); // expired: nothing to answer any more
            };
            let ours = protocol::decode::<IdempotencyEntry>(&entry.value)
                .is_ok_and(|e| e.request_id == claim.request_id);
            if entry.operation != Operation::Put || !ours {
                return Ok(());
            }
            let value = self.encode(&claim.tag, claim.request_id, KeyState::Done(answer))?;
            match self.kv.update(key, value, entry.revision).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        };
        if let Err(e) = stored.await {
            tracing::warn!(request_id = %claim.request_id, error = %e,
                "answer not stored under its Idempotency-Key");
        }
    }

    /// Free the key of a request that never reached the work queue, so a
    /// retry runs it at once instead of waiting out the takeover grace.
    pub async fn release(&self, claim: &Claim) {
        let key = claim.tag.key.as_str();
        if let Err(e) = self
            .kv
            .delete_expect_revision(key, Some(claim.revision))
            .await
        {
            tracing::debug!(request_id = %claim.request_id, error = %e,
                "Idempotency-Key not released; its takeover grace frees it");
        }
    }
}

/// How a waiting retry hears of changes to its key: a watch, or polling if
/// the watch could not start or ended.
#[derive(Default)]
struct Watching {
    watch: Option<kv::Watch>,
    tried: bool,
}

impl Watching {
    /// Return once the key may have changed, at `until` at the latest. The
    /// first call starts the watch and returns at once, so the caller reads
    /// the key again: a change between its last read and the watch is not missed.
    async fn changed(&mut self, kv: &kv::Store, key: &str, until: Instant) {
        if !self.tried {
            self.tried = true;
            match kv.watch(key).await {
                Ok(watch) => self.watch = Some(watch),
                Err(e) => tracing::warn!(error = %e, "cannot watch an Idempotency-Key; polling it"),
            }
            return;
        }
        let Some(watch) = self.watch.as_mut() else {
            return tokio::time::sleep_until(until).await;
        };
        if let Ok(None | Some(Err(_))) = tokio::time::timeout_at(until, watch.next()).await {
            self.watch = None; // ended: poll from now on
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> KeyError {
    KeyError::Unavailable(e.to_string())
}
