//! The two messages of the hot path: a [`TaskBatch`] the gateway publishes on
//! the task stream, and the [`ResultBatch`] a worker publishes back on the
//! batch's reply subject. Both travel as MessagePack ([`super::encode`]).

use super::deferred::DeferredTag;
use super::idempotency::IdempotencyTag;
use super::model::ModelName;
use super::task::{Priority, Task, TaskInput, TaskOutput};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One client request inside a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    /// Id the gateway gave the request; results are matched on it.
    pub request_id: Uuid,
    /// What to compute.
    pub input: TaskInput,
    /// Present when the client sent an `Idempotency-Key`: the worker stores
    /// the answer under it before publishing the result. Absent on the wire
    /// otherwise, and absent in batches from older gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyTag>,
    /// Present for a request sent to `POST /infer/async`: the worker stores
    /// its answer in the results bucket (`INFER_RESULTS_KV`) under its id
    /// and leaves it out of the result it publishes. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<DeferredTag>,
}

/// The unit of work on the task stream: requests of one model, task and priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBatch {
    /// Unique per batch; also the `Nats-Msg-Id`, so a re-published batch is deduplicated.
    pub batch_id: Uuid,
    /// Model every item runs on: the subject's model token, so only workers
    /// serving it pull the batch.
    pub model: ModelName,
    /// Task shared by every item.
    pub task: Task,
    /// Queue the batch was published to.
    pub priority: Priority,
    /// Subject the worker publishes the [`ResultBatch`] on.
    pub reply_subject: String,
    /// Unix milliseconds after which no client waits for any item any more.
    pub deadline_ms: u64,
    /// The requests, in arrival order.
    pub items: Vec<BatchItem>,
}

/// The answer for one request: an output or the reason there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemOutcome {
    /// The task ran.
    Ok(TaskOutput),
    /// The task could not run for this request; the text says why.
    Error(String),
    /// The answer was computed but cannot travel: on its own it takes more
    /// than a result message may carry (the NATS server's `max_payload`).
    #[serde(rename = "too_large")]
    TooLarge {
        /// Its encoded size.
        size: u64,
        /// What a result message may carry.
        limit: u64,
    },
}

/// One request's result inside a [`ResultBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// The request this answers.
    pub request_id: Uuid,
    /// Output or error.
    pub outcome: ItemOutcome,
    /// Model tokens its texts took (special tokens included, after
    /// truncation): the usage `/v1/embeddings` reports. 0 for what runs on
    /// no text model; absent on the wire then, and from older workers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a worker publishes on the batch's reply subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultBatch {
    /// The batch this answers.
    pub batch_id: Uuid,
    /// Worker that computed it.
    pub worker_id: String,
    /// Model that computed it.
    pub model: String,
    /// JetStream delivery count of the batch: 1 on the first try.
    pub attempt: u64,
    /// Time the forward pass and post-processing took on the worker.
    pub compute_ms: f64,
    /// One result per item, in the batch's order.
    pub items: Vec<ItemResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, encode, ScoredCandidate};
    use std::fmt;

    fn round_trip<T: Serialize + for<'a> Deserialize<'a> + PartialEq + fmt::Debug>(v: T) {
        let bytes = encode(&v).expect("encode");
        assert_eq!(decode::<T>(&bytes).expect("decode"), v);
    }

    #[test]
    fn every_output_shape_survives_msgpack() {
        let outputs = [
            TaskOutput::Embedding {
                embedding: vec![0.5, -0.25],
            },
            TaskOutput::Classification {
                label: "positive".into(),
                scores: [("positive".to_string(), 0.9), ("negative".to_string(), 0.1)].into(),
            },
            TaskOutput::Similarity {
                scores: vec![ScoredCandidate {
                    index: 1,
                    text: "a".into(),
                    score: 0.5,
                }],
            },
        ];
        let items = outputs
            .into_iter()
            .map(|o| ItemResult {
                request_id: Uuid::new_v4(),
                outcome: ItemOutcome::Ok(o),
                tokens: 7,
            })
            .chain([ItemResult {
                request_id: Uuid::new_v4(),
                tokens: 0,
                outcome: ItemOutcome::Error("too long".into()),
            }])
            .collect();
        round_trip(ResultBatch {
            batch_id: Uuid::new_v4(),
            worker_id: "w".into(),
            model: "m".into(),
            attempt: 2,
            compute_ms: 1.5,
            items,
        });
    }

    #[test]
    fn batches_survive_msgpack() {
        round_trip(TaskBatch {
            batch_id: Uuid::new_v4(),
            model: ModelName::default_for(Task::Similarity),
            task: Task::Similarity,
            priority: Priority::High,
            reply_subject: "infer.result.g".into(),
            deadline_ms: 42,
            items: vec![BatchItem {
                request_id: Uuid::new_v4(),
                input: TaskInput::Similarity {
                    query: "q".into(),
                    candidates: vec!["a".into(), "b".into()],
                },
                idempotency: Some(crate::protocol::IdempotencyTag {
                    key: "k".into(),
                    body_hash: "h".into(),
                    accepted_ms: 1,
                }),
                deferred: None,
            }],
        });
    }
}
