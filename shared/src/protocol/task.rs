//! The task vocabulary: what a client can ask for, at which priority, with
//! which input, and what comes back. The gateway's REST API, the batches on
//! NATS and the worker's dispatch all speak these types, so a task is named
//! in one place only.

use crate::image::ImageCrop;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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
#[serde(rename_all = "snake_case")]
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
    /// ImageNet-1k classification of a photo (EfficientNet-Lite0).
    ClassifyImage,
}

impl Task {
    /// Every task, in a stable order (consumers, status pages).
    pub const ALL: [Task; 5] = [
        Task::Embed,
        Task::Similarity,
        Task::Classify,
        Task::Echo,
        Task::ClassifyImage,
    ];

    /// The name used in subjects, consumers and the REST API.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Embed => "embed",
            Task::Similarity => "similarity",
            Task::Classify => "classify",
            Task::Echo => "echo",
            Task::ClassifyImage => "classify_image",
        }
    }
}

/// What a task's model reads: a worker serves a task when it has a model of
/// that kind (echo needs none, so every worker serves it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    /// Texts, for a sentence-embedding model.
    Text,
    /// Photos, for an image classifier.
    Image,
}

impl Task {
    /// The kind of model the task runs on; `None` for echo, which runs on none.
    pub fn modality(self) -> Option<Modality> {
        match self {
            Task::Embed | Task::Similarity | Task::Classify => Some(Modality::Text),
            Task::ClassifyImage => Some(Modality::Image),
            Task::Echo => None,
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
    expected: String,
}

/// The member of `all` whose `name` is `given`: the one parser behind
/// [`Task`] and [`Priority`], so both refuse a typo with the same message.
fn by_name<T: Copy>(
    kind: &'static str,
    all: &[T],
    name: fn(T) -> &'static str,
    given: &str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|x| name(*x) == given)
        .ok_or_else(|| UnknownName {
            kind,
            given: given.to_owned(),
            expected: all.iter().map(|x| name(*x)).collect::<Vec<_>>().join(", "),
        })
}

impl FromStr for Task {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name("task", &Task::ALL, Task::as_str, s)
    }
}

/// Which queue a request waits in.
///
/// Each priority has its own durable pull consumer
/// (`work-<model>-<task>-<priority>`, see [`crate::subjects::work_consumer`]) and
/// every worker runs a standing pull loop on each of them, so a `high` batch
/// is pulled as soon as a worker is free and never queues behind the
/// `normal` backlog.
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
    /// Latency-sensitive traffic: its own consumer keeps it out of the normal backlog.
    High,
    /// The default.
    #[default]
    Normal,
}

impl Priority {
    /// Every priority, most urgent first: one consumer each (a worker keeps a
    /// pull request on each while idle), listed in this order on status pages.
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
        by_name("priority", &Priority::ALL, Priority::as_str, s)
    }
}

/// The validated input of one request; its variant fixes the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
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
    /// Classify a photo, decoded and cropped by the gateway.
    ClassifyImage {
        /// The pixels the model reads.
        image: ImageCrop,
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
            TaskInput::ClassifyImage { .. } => Task::ClassifyImage,
        }
    }

    /// Estimated model tokens of this request: about four bytes per word piece
    /// plus `[CLS]`/`[SEP]`, at most the 256 the model reads, per text; echo
    /// needs no model; an image costs [`IMAGE_TOKENS`]. An estimate is enough
    /// to budget compute (the gateway's `MAX_REQUEST_TOKENS`, a worker's
    /// merged passes) without the tokenizer.
    pub fn estimated_tokens(&self) -> usize {
        match self {
            TaskInput::Echo { .. } => 0,
            TaskInput::ClassifyImage { .. } => IMAGE_TOKENS,
            _ => self
                .texts()
                .iter()
                .map(|text| (text.len() / 4 + 2).min(256))
                .sum(),
        }
    }

    /// Every text of this request, in order: the main text first, then
    /// candidates or labels; none for an image.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            TaskInput::ClassifyImage { .. } => Vec::new(),
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

/// What one image costs a worker, in the tokens of [`TaskInput::estimated_tokens`]:
/// an EfficientNet-Lite0 pass takes as long per image as MiniLM takes for
/// about 256 tokens (45 ms against 5.5 ms for 18 tokens, 2 threads, Zen 4),
/// so images are budgeted as one text of the longest kind each.
pub const IMAGE_TOKENS: usize = 256;

/// One class of an image classification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoredClass {
    /// Class name (the first name of its ImageNet synset).
    pub label: String,
    /// ImageNet-1k class index.
    pub index: usize,
    /// Softmax probability over the 1000 classes.
    pub score: f32,
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
/// client sees is just `{"embedding": [...]}`, `{"scores": [...]}`,
/// `{"label": ..., "scores": {...}}` or `{"label": ..., "top": [...]}`.
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
    /// `classify_image`: the likeliest class and the five likeliest.
    ImageClassification {
        /// Name of the likeliest class.
        label: String,
        /// The five likeliest classes, likeliest first.
        top: Vec<ScoredClass>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_put_the_main_text_first() {
        let input = TaskInput::Classify {
            text: "t".into(),
            labels: vec!["a".into(), "b".into()],
        };
        assert_eq!(input.texts(), ["t", "a", "b"]);
        assert_eq!("classify".parse::<Task>().unwrap(), Task::Classify);
        assert_eq!(
            "nope".parse::<Task>().unwrap_err().to_string(),
            r#"unknown task "nope"; expected one of: embed, similarity, classify, echo, classify_image"#
        );
        assert_eq!(
            "low".parse::<Priority>().unwrap_err().to_string(),
            r#"unknown priority "low"; expected one of: high, normal"#
        );
    }
}
