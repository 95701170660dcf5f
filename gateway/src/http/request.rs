//! The body of `POST /infer`, one shape per task: the type
//! [`super::validate::parse`] builds and the schema `/openapi.json` serves,
//! so the description cannot name a field the handler does not read.
//!
//! `parse` checks a body field by field, for errors that name the field, and
//! fills these types from what it checked; utoipa derives their schemas (it
//! alone reads the `serde` attributes here, nothing deserialises these types;
//! `openapi` closes each shape to unknown fields, which utoipa cannot say of
//! an enum variant). What a type cannot say (not blank, the limits) is a
//! schema attribute, with the defaults of `MAX_INPUT_CHARS` and `MAX_ITEMS`;
//! a test holds the served schema to `parse`'s verdict on the same bodies.

use crate::config::DEFAULT_MAX_INPUT_CHARS;
use jetinfer_shared::protocol::{Priority, TaskInput};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// Labels used when a classify request gives none (sentiment).
pub const DEFAULT_LABELS: [&str; 2] = ["positive", "negative"];

/// A checked text: not blank, at most `MAX_INPUT_CHARS` characters.
#[derive(Debug, Clone, PartialEq)]
pub struct Text(pub String);

impl PartialSchema for Text {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "Not blank; at most MAX_INPUT_CHARS (default {DEFAULT_MAX_INPUT_CHARS}) characters."
            )))
            .min_length(Some(1))
            .max_length(Some(DEFAULT_MAX_INPUT_CHARS))
            .pattern(Some(r"\S"))
            .into()
    }
}

impl ToSchema for Text {}

/// Query and candidates of a similarity request.
#[derive(Debug, Clone, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarityInput {
    /// The text the candidates are compared with.
    pub query: Text,
    /// 1 to `MAX_ITEMS` (default 256) texts.
    #[schema(min_items = 1, max_items = 256)]
    pub candidates: Vec<Text>,
}

/// Body of `POST /infer`: `task` names the shape. `priority` is `high` or
/// `normal` (the default).
#[derive(Debug, Clone, PartialEq, ToSchema)]
#[serde(tag = "task", rename_all = "lowercase")]
pub enum InferRequest {
    /// `embed`: the sentence embedding of `input`.
    Embed {
        /// The text to embed.
        input: Text,
        /// Queue to wait in.
        priority: Option<Priority>,
    },
    /// `similarity`: candidates ranked by cosine similarity to the query.
    Similarity {
        /// Query and candidates.
        input: SimilarityInput,
        /// Queue to wait in.
        priority: Option<Priority>,
    },
    /// `classify`: zero-shot classification of `input` against `labels`.
    Classify {
        /// The text to classify.
        input: Text,
        /// 2 to `MAX_ITEMS` (default 256) label names; default `["positive", "negative"]`.
        #[schema(min_items = 2, max_items = 256)]
        labels: Option<Vec<Text>>,
        /// Queue to wait in.
        priority: Option<Priority>,
    },
    /// `echo`: `input` back, without the model (pipeline overhead).
    Echo {
        /// The text to return.
        input: Text,
        /// Queue to wait in.
        priority: Option<Priority>,
    },
}

impl InferRequest {
    /// The queue the request waits in.
    pub fn priority(&self) -> Priority {
        match self {
            Self::Embed { priority, .. }
            | Self::Similarity { priority, .. }
            | Self::Classify { priority, .. }
            | Self::Echo { priority, .. } => priority.unwrap_or_default(),
        }
    }

    /// What the worker computes, defaults filled in.
    pub fn into_input(self) -> TaskInput {
        let texts = |texts: Vec<Text>| texts.into_iter().map(|t| t.0).collect();
        match self {
            Self::Embed { input, .. } => TaskInput::Embed { text: input.0 },
            Self::Similarity { input, .. } => TaskInput::Similarity {
                query: input.query.0,
                candidates: texts(input.candidates),
            },
            Self::Classify { input, labels, .. } => TaskInput::Classify {
                text: input.0,
                labels: labels.map_or_else(
                    || DEFAULT_LABELS.iter().map(|l| l.to_string()).collect(),
                    texts,
                ),
            },
            Self::Echo { input, .. } => TaskInput::Echo { text: input.0 },
        }
    }
}
