//! The decisions of safe retries, without I/O: what a keyed request does with
//! the entry it found under its key, and what its own reply leaves there.
//!
//! Takeover rules (a claim whose request will never be answered may be taken
//! over by a retry, which then runs it):
//! 1. an entry that does not decode (not written by jetinfer);
//! 2. a claim never published after [`UNPUBLISHED_GRACE_MS`]: its gateway died
//!    (or its publish failed) before JetStream stored the batch;
//! 3. a claim whose batch is no longer in `INFER_TASKS` and still no answer:
//!    the batch was terminated or lost ([`Verdict::WaitUnlessGone`]; the
//!    caller looks the sequence up).
//!
//! Everything else waits: a published batch still in the stream will be
//! computed, and its worker stores the answer.

use crate::waiters::Reply;
use jetinfer_shared::protocol::{IdempotencyEntry, KeyState, StoredAnswer};

/// How long a claim may stay unpublished before a retry takes it over. A
/// batch waits at most `BATCH_MAX_WAIT_MS` in the batcher and is normally
/// stored within milliseconds; a claim older than this belongs to a gateway
/// that died before publishing, or whose publish is failing.
pub const UNPUBLISHED_GRACE_MS: u64 = 5_000;

/// What a request under a key does with the entry it found there.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Another body was sent with this key: 422, nothing runs.
    Reused,
    /// The answer is there: send it again.
    Replay(StoredAnswer),
    /// It is being computed: wait for its answer.
    Wait,
    /// Its batch is at this stream sequence: wait while it is still in
    /// `INFER_TASKS`, take over once it is gone (rule 3).
    WaitUnlessGone(u64),
    /// Nobody will answer it: claim it and run it (rules 1 and 2).
    TakeOver,
}

/// The verdict on `entry` (`None`: it did not decode) for a request whose
/// body hashes to `body_hash`, at Unix ms `now_ms`.
pub fn judge(entry: Option<&IdempotencyEntry>, body_hash: &str, now_ms: u64) -> Verdict {
    let Some(entry) = entry else {
        return Verdict::TakeOver;
    };
    if entry.body_hash != body_hash {
        return Verdict::Reused;
    }
    match &entry.state {
        KeyState::Done(answer) => Verdict::Replay(answer.clone()),
        KeyState::Pending {
            published: Some(seq),
            ..
        } => Verdict::WaitUnlessGone(*seq),
        KeyState::Pending { since_ms, .. }
            if now_ms.saturating_sub(*since_ms) > UNPUBLISHED_GRACE_MS =>
        {
            Verdict::TakeOver
        }
        KeyState::Pending { .. } => Verdict::Wait,
    }
}

/// What the reply of a request run under a key leaves in its entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// A final answer: store it for every retry.
    Store(StoredAnswer),
    /// The request never reached the work queue: free the key, so a retry
    /// runs it afresh at once.
    Release,
    /// No final answer here (timeout, deadline passed, shutting down): leave
    /// the claim; the worker stores the answer if the batch is computed, and
    /// the takeover rules cover the rest.
    Keep,
}

/// What `reply`, given `latency_ms` after acceptance, leaves under the key.
pub fn settle(reply: &Reply, latency_ms: f64) -> Settle {
    match reply {
        Reply::Done {
            worker_id,
            model,
            attempt,
            outcome,
            ..
        } => Settle::Store(StoredAnswer::Computed {
            worker_id: worker_id.clone(),
            model: model.clone(),
            attempt: *attempt,
            outcome: outcome.clone(),
            latency_ms,
        }),
        Reply::Abandoned {
            attempts,
            exhausted: true,
        } => Settle::Store(StoredAnswer::Exhausted {
            attempts: *attempts,
        }),
        // Terminated because its deadline passed: it was never computed,
        // and a retry with a fresh deadline should be.
        Reply::Abandoned {
            exhausted: false, ..
        } => Settle::Keep,
        Reply::NotQueued(_) => Settle::Release,
    }
}

/// The reply a stored answer stands for, so a replay is shaped by the very
/// code that shaped the first answer.
pub fn replayed(answer: StoredAnswer) -> (Reply, f64) {
    match answer {
        StoredAnswer::Computed {
            worker_id,
            model,
            attempt,
            outcome,
            latency_ms,
        } => (
            Reply::Done {
                worker_id,
                model,
                attempt,
                outcome,
                tokens: 0,
            },
            latency_ms,
        ),
        StoredAnswer::Exhausted { attempts } => (
            Reply::Abandoned {
                attempts,
                exhausted: true,
            },
            0.0,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_shared::protocol::{ItemOutcome, TaskOutput};
    use uuid::Uuid;

    fn entry(state: KeyState) -> IdempotencyEntry {
        IdempotencyEntry {
            body_hash: "h".into(),
            request_id: Uuid::nil(),
            state,
        }
    }

    fn pending(since_ms: u64, published: Option<u64>) -> IdempotencyEntry {
        entry(KeyState::Pending {
            gateway_id: "gw".into(),
            since_ms,
            published,
        })
    }

    fn computed() -> StoredAnswer {
        StoredAnswer::Computed {
            worker_id: "w".into(),
            model: "m".into(),
            attempt: 1,
            outcome: ItemOutcome::Ok(TaskOutput::Echo { echo: "e".into() }),
            latency_ms: 3.0,
        }
    }

    #[test]
    fn another_body_is_refused_whatever_the_state() {
        let done = entry(KeyState::Done(computed()));
        for e in [&done, &pending(0, None), &pending(0, Some(3))] {
            assert_eq!(judge(Some(e), "other", 0), Verdict::Reused);
        }
    }

    #[test]
    fn an_answer_is_replayed() {
        let done = entry(KeyState::Done(computed()));
        assert_eq!(judge(Some(&done), "h", 0), Verdict::Replay(computed()));
    }

    #[test]
    fn a_claim_is_waited_for_until_one_of_the_takeover_rules_holds() {
        let grace = UNPUBLISHED_GRACE_MS;
        assert_eq!(
            judge(Some(&pending(1000, None)), "h", 1000 + grace),
            Verdict::Wait
        );
        assert_eq!(
            judge(Some(&pending(1000, None)), "h", 1001 + grace),
            Verdict::TakeOver,
            "never published: its gateway died first"
        );
        assert_eq!(
            judge(Some(&pending(1000, Some(42))), "h", 1000 + 100 * grace),
            Verdict::WaitUnlessGone(42),
            "published: however old, only the stream can tell"
        );
        assert_eq!(
            judge(Some(&pending(u64::MAX, None)), "h", 0),
            Verdict::Wait,
            "a claim from a clock ahead of ours is young"
        );
        assert_eq!(
            judge(None, "h", 0),
            Verdict::TakeOver,
            "not ours: overwritten"
        );
    }

    #[test]
    fn only_final_replies_are_stored_and_only_unqueued_ones_release_the_key() {
        let done = Reply::Done {
            worker_id: "w".into(),
            model: "m".into(),
            attempt: 1,
            outcome: ItemOutcome::Ok(TaskOutput::Echo { echo: "e".into() }),
            tokens: 0,
        };
        assert_eq!(settle(&done, 3.0), Settle::Store(computed()));
        let exhausted = Reply::Abandoned {
            attempts: 4,
            exhausted: true,
        };
        assert_eq!(
            settle(&exhausted, 9.0),
            Settle::Store(StoredAnswer::Exhausted { attempts: 4 })
        );
        let expired = Reply::Abandoned {
            attempts: 1,
            exhausted: false,
        };
        assert_eq!(settle(&expired, 9.0), Settle::Keep);
        assert_eq!(
            settle(&Reply::NotQueued("full".into()), 1.0),
            Settle::Release
        );
    }

    #[test]
    fn a_stored_answer_replays_as_the_reply_it_came_from() {
        let (reply, latency) = replayed(computed());
        assert_eq!(settle(&reply, latency), Settle::Store(computed()));
        let (reply, _) = replayed(StoredAnswer::Exhausted { attempts: 4 });
        assert!(matches!(
            reply,
            Reply::Abandoned {
                attempts: 4,
                exhausted: true
            }
        ));
    }
}
