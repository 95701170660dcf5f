//! Model names: what a request may name (`"model"`), what workers serve and
//! heartbeat, what answers report, and the middle token of every task
//! subject (`infer.task.<model>.<task>.<priority>`). One checked type for all
//! of them, so a name that would break a subject never gets that far.

use super::task::Task;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The text model the text tasks run on unless a request or `MODEL_ROUTES`
/// names another.
pub const TEXT_MODEL: &str = "all-minilm-l6-v2";
/// The image model `classify_image` runs on.
pub const IMAGE_MODEL: &str = "efficientnet-lite0";
/// The pseudo-model of the echo task: every worker serves it, none loads it.
pub const ECHO_MODEL: &str = "echo";
/// Longest model name: subjects and consumer names stay short enough to read.
pub const MAX_MODEL_NAME: usize = 64;

/// A model's short id: 1 to [`MAX_MODEL_NAME`] lower-case ASCII letters,
/// digits, `-` and `_`, starting with a letter or digit. Parsing lower-cases
/// (`All-MiniLM-L6-v2` names `all-minilm-l6-v2`); anything else (a dot, a
/// space, a wildcard) is refused, as it would be a different subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

/// A name that cannot be a model's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model name {given:?} is not valid: use 1 to {MAX_MODEL_NAME} letters, digits, `-` or `_`, starting with a letter or digit")]
pub struct BadModelName {
    given: String,
}

impl ModelName {
    /// The name as subjects and answers spell it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The model a task runs on when nothing names one: the text model for the
    /// text tasks, the image model for photos, the echo pseudo-model for echo.
    pub fn default_for(task: Task) -> Self {
        Self(
            match task {
                Task::Embed | Task::Similarity | Task::Classify => TEXT_MODEL,
                Task::ClassifyImage => IMAGE_MODEL,
                Task::Echo => ECHO_MODEL,
            }
            .to_owned(),
        )
    }

    /// A valid name made from any text: lower case, every other character
    /// outside the alphabet turned into `-`, cut to [`MAX_MODEL_NAME`]
    /// (`BAAI/bge-small-en-v1.5` → `baai-bge-small-en-v1-5`); `None` when
    /// nothing usable is left.
    pub fn sanitised(text: &str) -> Option<Self> {
        let name: String = text
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if allowed(c) { c } else { '-' })
            .skip_while(|c| !c.is_ascii_alphanumeric())
            .take(MAX_MODEL_NAME)
            .collect();
        name.parse().ok()
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

impl FromStr for ModelName {
    type Err = BadModelName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.to_ascii_lowercase();
        let valid = (1..=MAX_MODEL_NAME).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.chars().all(allowed);
        if valid {
            Ok(Self(name))
        } else {
            Err(BadModelName {
                given: s.to_owned(),
            })
        }
    }
}

impl TryFrom<String> for ModelName {
    type Error = BadModelName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ModelName> for String {
    fn from(name: ModelName) -> Self {
        name.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The schema of a model name in `/openapi.json`: the rule [`ModelName`]
/// parses by, upper case allowed (it is lower-cased).
impl utoipa::PartialSchema for ModelName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(format!(
                "^[A-Za-z0-9][A-Za-z0-9_-]{{0,{}}}$",
                MAX_MODEL_NAME - 1
            )))
            .description(Some(
                "A model's id as `GET /v1/models` lists it (case-insensitive); default: the task's route (MODEL_ROUTES) or default model.",
            ))
            .examples([serde_json::json!(TEXT_MODEL)])
            .into()
    }
}

impl utoipa::ToSchema for ModelName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_subject_tokens_in_lower_case() {
        let name: ModelName = "All-MiniLM-L6-v2".parse().unwrap();
        assert_eq!(name.as_str(), TEXT_MODEL);
        for bad in ["", "a.b", "a b", "*", ">", "-x", "é", &"x".repeat(65)] {
            assert!(bad.parse::<ModelName>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "a.b".parse::<ModelName>().unwrap_err().to_string(),
            "model name \"a.b\" is not valid: use 1 to 64 letters, digits, `-` or `_`, starting with a letter or digit"
        );
    }

    #[test]
    fn any_text_sanitises_to_a_name() {
        let name = ModelName::sanitised("BAAI/bge-small-en-v1.5").unwrap();
        assert_eq!(name.as_str(), "baai-bge-small-en-v1-5");
        assert_eq!(ModelName::sanitised("..."), None);
    }

    #[test]
    fn every_task_has_a_default_model() {
        assert_eq!(ModelName::default_for(Task::Embed).as_str(), TEXT_MODEL);
        assert_eq!(
            ModelName::default_for(Task::ClassifyImage).as_str(),
            IMAGE_MODEL
        );
        assert_eq!(ModelName::default_for(Task::Echo).as_str(), ECHO_MODEL);
    }

    #[test]
    fn a_bad_name_does_not_deserialise() {
        let bytes = crate::protocol::encode(&"a.b").unwrap();
        assert!(crate::protocol::decode::<ModelName>(&bytes).is_err());
    }
}
