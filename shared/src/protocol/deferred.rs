//! Async requests (`POST /infer/async`): what the `INFER_RESULTS_KV` bucket
//! holds for one, and the tag its task item carries to the worker.
//!
//! The gateway creates the entry ([`DeferredState::Queued`]) before it
//! queues the request, keyed by the request id; the worker that takes it
//! marks it [`DeferredState::Running`] and stores the answer
//! ([`DeferredState::Done`]) before it acks, each write conditional on the
//! revision it read. So the answer outlives the gateway that took the
//! request, any gateway can serve `GET /result/{id}`, and a request whose
//! entry is gone (`DELETE /result/{id}`, or expired) is never computed and
//! never comes back.

use super::idempotency::StoredAnswer;
use super::task::Task;
use serde::{Deserialize, Serialize};

/// Carried by a task item sent to `POST /infer/async`: its answer goes to the
/// results bucket under its request id, not to the gateway's reply subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredTag {
    /// Unix ms the gateway accepted the request: the stored answer reports
    /// its latency from here.
    pub accepted_ms: u64,
}

/// One async request's entry in the results bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeferredEntry {
    /// The task asked for (the answer is shaped as `/infer` shapes it).
    pub task: Task,
    /// Unix ms the gateway accepted the request.
    pub accepted_ms: u64,
    /// Where it stands.
    pub state: DeferredState,
}

/// Where an async request stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeferredState {
    /// In the work queue (or the gateway's batcher); no worker has it yet.
    Queued {
        /// The gateway that took it (for operators).
        gateway_id: String,
    },
    /// A worker is computing it (a redelivery takes it over).
    Running {
        /// The worker computing it.
        worker_id: String,
        /// Unix ms it started.
        since_ms: u64,
    },
    /// The answer, as `/infer` would have given it.
    Done(StoredAnswer),
}

impl DeferredState {
    /// The status `GET /result/{id}` reports before the answer.
    pub fn status(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::Running { .. } => "running",
            Self::Done(_) => "done",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, encode, BatchItem, ItemOutcome, TaskInput, TaskOutput};

    #[test]
    fn entries_survive_msgpack() {
        for state in [
            DeferredState::Queued {
                gateway_id: "gw".into(),
            },
            DeferredState::Running {
                worker_id: "w".into(),
                since_ms: 3,
            },
            DeferredState::Done(StoredAnswer::Computed {
                worker_id: "w".into(),
                model: "m".into(),
                attempt: 1,
                outcome: ItemOutcome::Ok(TaskOutput::Echo { echo: "e".into() }),
                latency_ms: 2.0,
            }),
            DeferredState::Done(StoredAnswer::Exhausted { attempts: 4 }),
        ] {
            let entry = DeferredEntry {
                task: Task::Echo,
                accepted_ms: 9,
                state,
            };
            assert_eq!(
                decode::<DeferredEntry>(&encode(&entry).unwrap()).unwrap(),
                entry
            );
        }
    }

    #[test]
    fn items_without_the_tag_encode_as_before() {
        let item = BatchItem {
            request_id: uuid::Uuid::nil(),
            input: TaskInput::Echo { text: "a".into() },
            idempotency: None,
            deferred: None,
        };
        let tagged = BatchItem {
            deferred: Some(DeferredTag { accepted_ms: 5 }),
            ..item.clone()
        };
        let plain = encode(&item).unwrap();
        assert!(encode(&tagged).unwrap().len() > plain.len());
        assert_eq!(decode::<BatchItem>(&plain).unwrap(), item);
        assert_eq!(
            decode::<BatchItem>(&encode(&tagged).unwrap()).unwrap(),
            tagged
        );
    }
}
