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

use crate::config::{DEFAULT_MAX_INPUT_CHARS, DEFAULT_MAX_ITEMS};
use jetinfer_shared::protocol::{ModelName, Priority, Task, TaskInput};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// Labels used when a classify request gives none (sentiment).
pub const DEFAULT_LABELS: [&str; 2] = ["positive", "negative"];

/// Characters that show nothing, or that the model's normaliser drops
/// (controls, format characters, combining marks, private use): whitespace,
/// Cc, Cf, Co and the combining-mark blocks of the Basic Multilingual Plane.
/// A text made only of them would be embedded as the empty text, so a text
/// needs one character outside these ranges. One table serves validation and
/// the schema's `pattern`, so the two cannot disagree. Characters outside the
/// BMP and unassigned code points count as visible.
const INVISIBLE: [(char, char); 27] = [
    ('\0', ' '),              // C0 controls, tab, newline, space
    ('\u{7f}', '\u{a0}'),     // DEL, C1 controls, no-break space
    ('\u{ad}', '\u{ad}'),     // soft hyphen
    ('\u{300}', '\u{36f}'),   // combining diacritical marks, grapheme joiner
    ('\u{483}', '\u{489}'),   // Cyrillic combining marks
    ('\u{600}', '\u{605}'),   // Arabic number signs
    ('\u{61c}', '\u{61c}'),   // Arabic letter mark
    ('\u{6dd}', '\u{6dd}'),   // Arabic end of ayah
    ('\u{70f}', '\u{70f}'),   // Syriac abbreviation mark
    ('\u{890}', '\u{891}'),   // Arabic pound and piastre marks
    ('\u{8e2}', '\u{8e2}'),   // Arabic disputed end of ayah
    ('\u{1680}', '\u{1680}'), // Ogham space
    ('\u{180e}', '\u{180e}'), // Mongolian vowel separator
    ('\u{1ab0}', '\u{1aff}'), // combining diacritical marks extended
    ('\u{1dc0}', '\u{1dff}'), // combining diacritical marks supplement
    ('\u{2000}', '\u{200f}'), // spaces, zero-width space and joiners, direction marks
    ('\u{2028}', '\u{202f}'), // line and paragraph separators, embeddings, narrow space
    ('\u{205f}', '\u{206f}'), // math space, word joiner, invisible operators, isolates
    ('\u{20d0}', '\u{20ff}'), // combining marks for symbols
    ('\u{3000}', '\u{3000}'), // ideographic space
    ('\u{e000}', '\u{f8ff}'), // private use
    ('\u{fe00}', '\u{fe0f}'), // variation selectors
    ('\u{fe20}', '\u{fe2f}'), // combining half marks
    ('\u{feff}', '\u{feff}'), // zero-width no-break space (BOM)
    ('\u{fff9}', '\u{fffb}'), // interlinear annotation
    ('\u{fffc}', '\u{fffc}'), // object replacement character
    ('\u{fffd}', '\u{fffd}'), // replacement character, dropped by the model
];

/// Does `text` have a character the model sees?
pub fn has_visible(text: &str) -> bool {
    text.chars()
        .any(|c| !INVISIBLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)))
}

/// The schema's form of [`has_visible`]: one character outside
/// [`INVISIBLE`], written with `\uXXXX` escapes that both ECMA-262 and
/// Python regular expressions read.
pub fn visible_pattern() -> String {
    let ranges: String = INVISIBLE
        .iter()
        .map(|&(lo, hi)| format!("\\u{:04x}-\\u{:04x}", lo as u32, hi as u32))
        .collect();
    format!("[^{ranges}]")
}

/// A checked text: one visible character or more, at most `MAX_INPUT_CHARS` characters.
#[derive(Debug, Clone, PartialEq)]
pub struct Text(pub String);

impl PartialSchema for Text {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "At least one visible character (not only whitespace, control, format or combining characters); at most MAX_INPUT_CHARS (default {DEFAULT_MAX_INPUT_CHARS}) characters."
            )))
            .min_length(Some(1))
            .max_length(Some(DEFAULT_MAX_INPUT_CHARS))
            .pattern(Some(visible_pattern()))
            .into()
    }
}

impl ToSchema for Text {}

/// Labels of a classify request, each different: a label given twice would
/// split its probability and answer a question nobody asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels(pub Vec<Text>);

impl PartialSchema for Labels {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(Ref::from_schema_name("Text"))
            .description(Some(format!(
                "2 to MAX_ITEMS (default {DEFAULT_MAX_ITEMS}) different label names; default `[\"positive\", \"negative\"]`."
            )))
            .min_items(Some(2))
            .max_items(Some(DEFAULT_MAX_ITEMS))
            .unique_items(true)
            .into()
    }
}

impl ToSchema for Labels {}

/// A media type token: visible ASCII without `/`, not empty.
fn token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// The type and the lower-case subtype of a `Content-Type` value (RFC 9110
/// §8.3.1), parameters (`; charset=utf-8`) dropped; `None` when it has no
/// `type/subtype` of tokens.
fn media_type(content_type: &str) -> Option<(&str, String)> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let (kind, subtype) = essence.split_once('/')?;
    (token(kind) && token(subtype)).then(|| (kind, subtype.to_ascii_lowercase()))
}

/// Is a `Content-Type` value JSON? The type and subtype are
/// case-insensitive, `application/json` or any `application/*+json`, and
/// parameters are allowed.
pub fn is_json(content_type: &str) -> bool {
    media_type(content_type).is_some_and(|(kind, subtype)| {
        kind.eq_ignore_ascii_case("application")
            && (subtype == "json" || subtype.strip_suffix("+json").is_some_and(token))
    })
}

/// A photo's file bytes (PNG or JPEG, not yet decoded): from a JSON body's
/// base64 `input` (standard alphabet, padding optional), as its schema
/// says, or from a raw upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Photo(pub Vec<u8>);

impl PartialSchema for Photo {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_encoding("base64")
            .description(Some(
                "A PNG or JPEG photo, base64-encoded, within MAX_BODY_BYTES; larger photos go as a raw upload (`Content-Type: image/jpeg`, `?task=classify_image`, up to MAX_IMAGE_BYTES). At most 8192 pixels a side.",
            ))
            .min_length(Some(1))
            .into()
    }
}

impl ToSchema for Photo {}

/// The body of a raw photo upload, as the description names it: bytes.
pub struct RawImage;

impl PartialSchema for RawImage {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .description(Some(
                "The photo's bytes, at most MAX_IMAGE_BYTES (default 16 MiB) and 8192 pixels a side.",
            ))
            .into()
    }
}

impl ToSchema for RawImage {}

/// The `task` of `/infer`'s query: a photo upload's, so only `classify_image`.
pub struct UploadTask;

impl PartialSchema for UploadTask {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["classify_image"]))
            .into()
    }
}

impl ToSchema for UploadTask {}

/// Is a `Content-Type` value an image (`image/png`, `image/jpeg`, any
/// `image/*`, case-insensitive, parameters allowed)? Whether the bytes are
/// one the decoder reads is found out by decoding them.
pub fn is_image(content_type: &str) -> bool {
    media_type(content_type).is_some_and(|(kind, _)| kind.eq_ignore_ascii_case("image"))
}

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
/// `normal` (the default); `model` one `GET /v1/models` lists for the task
/// (default: the task's route, `MODEL_ROUTES`, or its default model).
#[derive(Debug, Clone, PartialEq, ToSchema)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum InferRequest {
    /// `embed`: the sentence embedding of `input`.
    Embed {
        /// The text to embed.
        input: Text,
        /// Queue to wait in.
        priority: Option<Priority>,
        /// Model to run on.
        model: Option<ModelName>,
    },
    /// `similarity`: candidates ranked by cosine similarity to the query.
    Similarity {
        /// Query and candidates.
        input: SimilarityInput,
        /// Queue to wait in.
        priority: Option<Priority>,
        /// Model to run on.
        model: Option<ModelName>,
    },
    /// `classify`: zero-shot classification of `input` against `labels`.
    Classify {
        /// The text to classify.
        input: Text,
        /// The labels to choose from.
        labels: Option<Labels>,
        /// Queue to wait in.
        priority: Option<Priority>,
        /// Model to run on.
        model: Option<ModelName>,
    },
    /// `echo`: `input` back, without the model (pipeline overhead).
    Echo {
        /// The text to return.
        input: Text,
        /// Queue to wait in.
        priority: Option<Priority>,
        /// Model to run on.
        model: Option<ModelName>,
    },
    /// `classify_image`: the ImageNet-1k classes of a photo (EfficientNet-Lite0).
    ClassifyImage {
        /// The photo.
        input: Photo,
        /// Queue to wait in.
        priority: Option<Priority>,
        /// Model to run on.
        model: Option<ModelName>,
    },
}

/// What a request asks to compute, once validated: ready to queue, or a
/// photo still to decode (off the async threads, see [`super::image`]).
#[derive(Debug, PartialEq)]
pub enum Pending {
    /// A text task's input, defaults filled in.
    Ready(TaskInput),
    /// The encoded bytes of a `classify_image` photo.
    Image(Vec<u8>),
}

impl InferRequest {
    /// The queue the request waits in.
    pub fn priority(&self) -> Priority {
        match self {
            Self::Embed { priority, .. }
            | Self::Similarity { priority, .. }
            | Self::Classify { priority, .. }
            | Self::Echo { priority, .. }
            | Self::ClassifyImage { priority, .. } => priority.unwrap_or_default(),
        }
    }

    /// The model the request names, if it names one.
    pub fn model(&self) -> Option<&ModelName> {
        match self {
            Self::Embed { model, .. }
            | Self::Similarity { model, .. }
            | Self::Classify { model, .. }
            | Self::Echo { model, .. }
            | Self::ClassifyImage { model, .. } => model.as_ref(),
        }
    }

    /// The task asked for.
    pub fn task(&self) -> Task {
        match self {
            Self::Embed { .. } => Task::Embed,
            Self::Similarity { .. } => Task::Similarity,
            Self::Classify { .. } => Task::Classify,
            Self::Echo { .. } => Task::Echo,
            Self::ClassifyImage { .. } => Task::ClassifyImage,
        }
    }

    /// What the worker computes, defaults filled in; a photo is still to decode.
    pub fn into_input(self) -> Pending {
        let texts = |texts: Vec<Text>| texts.into_iter().map(|t| t.0).collect();
        Pending::Ready(match self {
            Self::ClassifyImage { input, .. } => return Pending::Image(input.0),
            Self::Embed { input, .. } => TaskInput::Embed { text: input.0 },
            Self::Similarity { input, .. } => TaskInput::Similarity {
                query: input.query.0,
                candidates: texts(input.candidates),
            },
            Self::Classify { input, labels, .. } => TaskInput::Classify {
                text: input.0,
                labels: labels.map_or_else(
                    || DEFAULT_LABELS.iter().map(|l| l.to_string()).collect(),
                    |labels| texts(labels.0),
                ),
            },
            Self::Echo { input, .. } => TaskInput::Echo { text: input.0 },
        })
    }
}
