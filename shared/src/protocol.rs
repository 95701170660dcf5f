//! Wire types: what travels on task and result subjects and in the heartbeat bucket.
//!
//! Task and result payloads are MessagePack with named fields
//! ([`encode`]/[`decode`]), so a field added later does not shift the others
//! and the nats CLI shows readable keys. Heartbeats are JSON so
//! `nats kv get INFER_WORKERS <id>` is readable as it is.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A computation a client can ask for; each one is a single forward pass per batch.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Sentence embedding of one text.
    Embed,
    /// Rank candidate texts by cosine similarity to a query.
    Similarity,
    /// Zero-shot classification of a text against label names.
    Classify,
    /// Returns the input without touching the model: measures the pipeline's
    /// own overhead (gateway, NATS, worker loop) in benchmarks.
    Echo,
}

impl Task {
    /// Every task, in a stable order (consumers, status pages).
    pub const ALL: [Task; 4] = [Task::Embed, Task::Similarity, Task::Classify, Task::Echo];

    /// The name used in subjects, consumers and the REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Embed => "embed",
            Task::Similarity => "similarity",
            Task::Classify => "classify",
            Task::Echo => "echo",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not one of [`Task::ALL`] or [`Priority`]'s names.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} {given:?}; expected one of: {expected}")]
pub struct UnknownName {
    kind: &'static str,
    given: String,
    expected: &'static str,
}

impl FromStr for Task {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Task::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "task",
                given: s.to_owned(),
                expected: "embed, similarity, classify, echo",
            })
    }
}

/// Which queue a request waits in; workers drain `high` before `normal`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Default,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    #[default]
    Normal,
}

impl Priority {
    /// Every priority, most urgent first: the order workers pull in.
    pub const ALL: [Priority; 2] = [Priority::High, Priority::Normal];

    /// The name used in subjects and the REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
        }
    }
}

impl FromStr for Priority {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "priority",
                given: s.to_owned(),
                expected: "high, normal",
            })
    }
}

/// The validated input of one request; its variant fixes the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "lowercase")]
pub enum TaskInput {
    /// Embed one text.
    Embed {
        /// The text to embed.
        text: String,
    },
    /// Score every candidate against the query.
    Similarity {
        /// The text candidates are compared with.
        query: String,
        /// The texts to rank.
        candidates: Vec<String>,
    },
    /// Pick the label whose embedding is closest to the text's.
    Classify {
        /// The text to classify.
        text: String,
        /// Candidate label names, used as texts to embed.
        labels: Vec<String>,
    },
    /// Return the text as it is.
    Echo {
        /// The text to return.
        text: String,
    },
}

impl TaskInput {
    /// The task this input belongs to.
    pub fn task(&self) -> Task {
        match self {
            TaskInput::Embed { .. } => Task::Embed,
            TaskInput::Similarity { .. } => Task::Similarity,
            TaskInput::Classify { .. } => Task::Classify,
            TaskInput::Echo { .. } => Task::Echo,
        }
    }

    /// Every text of this request, in order: the main text first, then
    /// candidates or labels.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            TaskInput::Embed { text } | TaskInput::Echo { text } => vec![text.as_str()],
            TaskInput::Similarity { query, candidates } => std::iter::once(query)
                .chain(candidates)
                .map(String::as_str)
                .collect(),
            TaskInput::Classify { text, labels } => std::iter::once(text)
                .chain(labels)
                .map(String::as_str)
                .collect(),
        }
    }
}

/// One client request inside a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    /// Id the gateway gave the request; results are matched on it.
    pub request_id: Uuid,
    /// What to compute.
    pub input: TaskInput,
}

/// The unit of work on the task stream: requests of one task and priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBatch {
    /// Unique per batch; also the `Nats-Msg-Id`, so a re-published batch is deduplicated.
    pub batch_id: Uuid,
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

/// Most requests a worker accepts in one batch (the gateway's `BATCH_MAX_SIZE` ceiling).
pub const MAX_BATCH_ITEMS: usize = 1024;
/// Most texts in one request (query + candidates, text + labels).
pub const MAX_ITEM_TEXTS: usize = 4096;
/// Longest text a worker tokenizes, in bytes. The gateway's own limit is far
/// lower; this one only stops a hand-made message from stalling a worker.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

impl TaskBatch {
    /// Refuse a batch no gateway would send: too many items, a text too long,
    /// or an item of another task. A worker terminates such a batch instead of
    /// spending minutes (or all its memory) on it.
    pub fn check_limits(&self) -> Result<(), String> {
        if self.items.len() > MAX_BATCH_ITEMS {
            return Err(format!(
                "batch of {} requests exceeds the {MAX_BATCH_ITEMS} a worker accepts",
                self.items.len()
            ));
        }
        for item in &self.items {
            if item.input.task() != self.task {
                return Err(format!(
                    "request {} is a {} request in a {} batch",
                    item.request_id,
                    item.input.task(),
                    self.task
                ));
            }
            let texts = item.input.texts();
            if texts.len() > MAX_ITEM_TEXTS {
                return Err(format!(
                    "request {} carries {} texts; the limit is {MAX_ITEM_TEXTS}",
                    item.request_id,
                    texts.len()
                ));
            }
            if let Some(long) = texts.iter().find(|t| t.len() > MAX_TEXT_BYTES) {
                return Err(format!(
                    "request {} has a text of {} bytes; the limit is {MAX_TEXT_BYTES}",
                    item.request_id,
                    long.len()
                ));
            }
        }
        Ok(())
    }
}

/// One candidate's score in a similarity answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoredCandidate {
    /// Position of the candidate in the request.
    pub index: usize,
    /// The candidate text.
    pub text: String,
    /// Cosine similarity with the query, in [-1, 1].
    pub score: f32,
}

/// What a task computed for one request. Serialised untagged, so the JSON a
/// client sees is just `{"embedding": [...]}`, `{"scores": [...]}` or
/// `{"label": ..., "scores": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TaskOutput {
    /// `embed`: the L2-normalised sentence embedding.
    Embedding {
        /// 384 floats for all-MiniLM-L6-v2.
        embedding: Vec<f32>,
    },
    /// `classify`: the winning label and the probability of each label.
    Classification {
        /// Label with the highest probability.
        label: String,
        /// Softmax probability of every label.
        scores: BTreeMap<String, f32>,
    },
    /// `similarity`: candidates sorted by descending score.
    Similarity {
        /// Highest score first.
        scores: Vec<ScoredCandidate>,
    },
    /// `echo`: the input, unchanged.
    Echo {
        /// The input text.
        echo: String,
    },
}

/// The answer for one request: an output or the reason there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemOutcome {
    /// The task ran.
    Ok(TaskOutput),
    /// The task could not run for this request; the text says why.
    Error(String),
}

/// One request's result inside a [`ResultBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// The request this answers.
    pub request_id: Uuid,
    /// Output or error.
    pub outcome: ItemOutcome,
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

/// A worker's liveness record in the `INFER_WORKERS` bucket (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    /// Worker id, also the KV key.
    pub id: String,
    /// Tasks the worker pulls.
    pub tasks: Vec<Task>,
    /// Model name or folder the worker serves.
    pub model: String,
    /// Worker build version.
    pub version: String,
    /// `starting`, `ready` or `draining`.
    pub state: String,
    /// Batches being computed right now.
    pub in_flight: u64,
    /// Requests answered successfully since start.
    pub processed: u64,
    /// Requests answered with an error since start.
    pub failed: u64,
    /// Batches received on a redelivery since start.
    #[serde(default)]
    pub redelivered: u64,
    /// Compute time of the last batch, in milliseconds.
    pub last_batch_ms: f64,
    /// Unix milliseconds when the worker started.
    pub started_at_ms: u64,
    /// Unix milliseconds of this heartbeat.
    pub updated_at_ms: u64,
}

/// Something that happened on a worker, published on `infer.event.<worker>.<kind>`
/// (JSON) for the dashboard and for people watching with `nats sub 'infer.event.>'`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerEvent {
    /// Worker the event happened on.
    pub worker_id: String,
    /// Per batch: `started`, `completed`, `failed`, `redelivered`, `expired`;
    /// per worker: `online`, `stopped`.
    pub kind: String,
    /// Batch concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
    /// Requests in that batch.
    #[serde(default)]
    pub requests: usize,
    /// Delivery count of that batch.
    #[serde(default)]
    pub attempt: u64,
    /// Compute time, for `completed`.
    #[serde(default)]
    pub latency_ms: f64,
    /// What went wrong, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// Characters of a text kept in a preview.
const PREVIEW_CHARS: usize = 120;

/// `text` cut to 120 characters (with an ellipsis), for logs and the dashboard.
pub fn preview(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

impl TaskOutput {
    /// A one-line summary a person can scan in a table.
    pub fn preview(&self) -> String {
        match self {
            TaskOutput::Embedding { embedding } => {
                let head: Vec<String> = embedding
                    .iter()
                    .take(3)
                    .map(|x| format!("{x:.4}"))
                    .collect();
                format!("[{}, …] ({} floats)", head.join(", "), embedding.len())
            }
            TaskOutput::Classification { label, scores } => {
                format!(
                    "{label} ({:.2})",
                    scores.get(label).copied().unwrap_or_default()
                )
            }
            TaskOutput::Echo { echo } => preview(echo),
            TaskOutput::Similarity { scores } => match scores.first() {
                Some(best) => preview(&format!("#{} {:.3} {}", best.index, best.score, best.text)),
                None => "no candidates".to_owned(),
            },
        }
    }
}

/// One finished request as the gateway saw it: kept for `/recent_requests`
/// and published on `infer.event.<gateway-id>.request` for the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequestRecord {
    /// Request id.
    pub request_id: Uuid,
    /// Task.
    pub task: Task,
    /// `ok` or the error code the client got.
    pub outcome: String,
    /// HTTP status sent.
    pub status: u16,
    /// Worker that answered, if any.
    pub worker_id: Option<String>,
    /// Redeliveries before the answer.
    pub retries: u64,
    /// Time from acceptance to answer.
    pub latency_ms: f64,
    /// Error message, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The input's main text, truncated.
    pub input: String,
    /// The output, summarised ([`TaskOutput::preview`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Unix ms of the answer.
    pub finished_at_ms: u64,
}

/// A gateway's request counters since it started, published every second on
/// `infer.event.<gateway-id>.stats` so the dashboard shows totals, not just
/// what it saw since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayStats {
    /// Requests accepted (validated and queued).
    pub submitted: u64,
    /// Answered with an output.
    pub completed: u64,
    /// Answered with an error after being accepted (includes timeouts).
    pub failed: u64,
    /// Answered after at least one redelivery.
    pub retried: u64,
    /// Of `failed`: no answer before the request timeout.
    pub timed_out: u64,
    /// Refused at validation (4xx).
    pub rejected: u64,
    /// Results that arrived for an already answered request (redelivery duplicates).
    pub duplicates_dropped: u64,
}

/// A task or result payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Encoding failed (practically only on a bug in a `Serialize` impl).
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes are not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// Encode a wire value as MessagePack with field names.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decode a wire value from MessagePack.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            })
            .chain([ItemResult {
                request_id: Uuid::new_v4(),
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
            }],
        });
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(matches!(
            decode::<TaskBatch>(b"\xc1garbage"),
            Err(WireError::Decode(_))
        ));
    }

    #[test]
    fn previews_are_short_and_readable() {
        assert_eq!(preview(&"x".repeat(200)).chars().count(), PREVIEW_CHARS + 1);
        assert_eq!(preview("short"), "short");
        let e = TaskOutput::Embedding {
            embedding: vec![0.5; 384],
        };
        assert_eq!(e.preview(), "[0.5000, 0.5000, 0.5000, …] (384 floats)");
        let c = TaskOutput::Classification {
            label: "positive".into(),
            scores: [("positive".to_string(), 0.8)].into(),
        };
        assert_eq!(c.preview(), "positive (0.80)");
    }

    #[test]
    fn texts_put_the_main_text_first() {
        let input = TaskInput::Classify {
            text: "t".into(),
            labels: vec!["a".into(), "b".into()],
        };
        assert_eq!(input.texts(), ["t", "a", "b"]);
        assert_eq!("classify".parse::<Task>().unwrap(), Task::Classify);
        assert!("nope".parse::<Task>().is_err());
    }
}
