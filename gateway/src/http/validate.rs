//! Turning a JSON body into an [`InferRequest`], with an error that says exactly what is wrong.
//!
//! The body is parsed as a generic JSON value first and checked field by
//! field, so messages name the field and the limit rather than echoing a
//! serde type error. What passes is built into the types `/openapi.json`
//! describes ([`super::request`]).

use super::error::ApiError;
use super::request::{InferRequest, SimilarityInput, Text};
use crate::config::Limits;
use jetinfer_shared::protocol::{Priority, Task};
use serde_json::{Map, Value};

const FIELDS: [&str; 4] = ["task", "input", "labels", "priority"];

/// Validate a raw body against `limits`.
pub fn parse(body: &[u8], limits: &Limits) -> Result<InferRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidJson(format!("body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::InvalidJson("body must be a JSON object".into()));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::UnknownField(unknown.clone()));
    }
    let task: Task = match fields.get("task") {
        None | Some(Value::Null) => return Err(ApiError::MissingField("task")),
        Some(Value::String(name)) => name
            .parse()
            .map_err(|e| ApiError::UnknownTask(format!("{e}")))?,
        Some(_) => return Err(ApiError::InvalidInput("`task` must be a string".into())),
    };
    let priority: Option<Priority> = match fields.get("priority") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(
            p.parse()
                .map_err(|e| ApiError::InvalidInput(format!("{e}")))?,
        ),
        Some(_) => return Err(ApiError::InvalidInput("`priority` must be a string".into())),
    };
    if task != Task::Classify && fields.contains_key("labels") {
        return Err(ApiError::InvalidInput(format!(
            "`labels` only applies to task `classify`, not `{task}`"
        )));
    }
    let input = fields
        .get("input")
        .filter(|v| !v.is_null())
        .ok_or(ApiError::MissingField("input"))?;
    Ok(match task {
        Task::Embed => InferRequest::Embed {
            input: text(input, "input", limits)?,
            priority,
        },
        Task::Echo => InferRequest::Echo {
            input: text(input, "input", limits)?,
            priority,
        },
        Task::Similarity => InferRequest::Similarity {
            input: similarity(input, limits)?,
            priority,
        },
        Task::Classify => InferRequest::Classify {
            input: text(input, "input", limits)?,
            labels: labels(&fields, limits)?,
            priority,
        },
    })
}

/// A non-blank string within the length limit.
fn text(value: &Value, field: &str, limits: &Limits) -> Result<Text, ApiError> {
    let Value::String(s) = value else {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must be a string"
        )));
    };
    if s.trim().is_empty() {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must not be empty"
        )));
    }
    let chars = s.chars().count();
    if chars > limits.max_input_chars {
        return Err(ApiError::TooLarge(format!(
            "`{field}` has {chars} characters; the limit is {} (MAX_INPUT_CHARS)",
            limits.max_input_chars
        )));
    }
    Ok(Text(s.clone()))
}

/// A non-empty list of texts within the item limit.
fn texts(value: &Value, field: &str, limits: &Limits) -> Result<Vec<Text>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must be an array of strings"
        )));
    };
    if items.is_empty() {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must not be empty"
        )));
    }
    if items.len() > limits.max_items {
        return Err(ApiError::TooLarge(format!(
            "`{field}` has {} items; the limit is {} (MAX_ITEMS)",
            items.len(),
            limits.max_items
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| text(v, &format!("{field}[{i}]"), limits))
        .collect()
}

fn similarity(input: &Value, limits: &Limits) -> Result<SimilarityInput, ApiError> {
    let Value::Object(obj) = input else {
        return Err(ApiError::InvalidInput(
            "`input` of task `similarity` must be an object {\"query\": string, \"candidates\": [string, ...]}".into(),
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| *k != "query" && *k != "candidates") {
        return Err(ApiError::UnknownField(format!("input.{unknown}")));
    }
    let query = obj
        .get("query")
        .ok_or(ApiError::MissingField("input.query"))?;
    let candidates = obj
        .get("candidates")
        .ok_or(ApiError::MissingField("input.candidates"))?;
    Ok(SimilarityInput {
        query: text(query, "input.query", limits)?,
        candidates: texts(candidates, "input.candidates", limits)?,
    })
}

/// The labels given, or `None` for the default ones.
fn labels(fields: &Map<String, Value>, limits: &Limits) -> Result<Option<Vec<Text>>, ApiError> {
    let Some(value) = fields.get("labels").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let labels = texts(value, "labels", limits)?;
    if labels.len() < 2 {
        return Err(ApiError::InvalidInput(
            "`labels` needs at least two labels to choose from".into(),
        ));
    }
    Ok(Some(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_shared::protocol::TaskInput;

    const LIMITS: Limits = Limits {
        max_body_bytes: 1024,
        max_input_chars: 10,
        max_items: 3,
        request_timeout_ms: 1000,
        max_in_flight: 8,
    };

    fn check(body: &str) -> Result<InferRequest, ApiError> {
        parse(body.as_bytes(), &LIMITS)
    }

    #[test]
    fn accepts_every_task_shape() {
        let v = check(r#"{"task":"embed","input":"hi"}"#).unwrap();
        assert_eq!(v.priority(), Priority::Normal);
        assert_eq!(v.into_input(), TaskInput::Embed { text: "hi".into() });
        let v = check(r#"{"task":"classify","input":"hi","priority":"high"}"#).unwrap();
        assert_eq!(v.priority(), Priority::High);
        assert_eq!(
            v.into_input(),
            TaskInput::Classify {
                text: "hi".into(),
                labels: vec!["positive".into(), "negative".into()]
            }
        );
        assert_eq!(
            check(r#"{"task":"similarity","input":{"query":"q","candidates":["a","b"]}}"#)
                .unwrap()
                .into_input(),
            TaskInput::Similarity {
                query: "q".into(),
                candidates: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            check(r#"{"task":"echo","input":"hi","priority":null}"#)
                .unwrap()
                .into_input(),
            TaskInput::Echo { text: "hi".into() }
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            (r#"{"task":"embed","#, "invalid_json"),
            (r#"[1]"#, "invalid_json"),
            (r#"{"input":"x"}"#, "missing_field"),
            (r#"{"task":"embed"}"#, "missing_field"),
            (r#"{"task":"dance","input":"x"}"#, "unknown_task"),
            (
                r#"{"task":"embed","input":"x","lables":["a"]}"#,
                "unknown_field",
            ),
            (r#"{"task":"embed","input":""}"#, "invalid_input"),
            (r#"{"task":"embed","input":42}"#, "invalid_input"),
            (
                r#"{"task":"embed","input":"01234567890"}"#,
                "input_too_large",
            ),
            (r#"{"task":"similarity","input":"x"}"#, "invalid_input"),
            (
                r#"{"task":"similarity","input":{"query":"q","candidates":[]}}"#,
                "invalid_input",
            ),
            (
                r#"{"task":"similarity","input":{"query":"q","candidates":["a","b","c","d"]}}"#,
                "input_too_large",
            ),
            (
                r#"{"task":"classify","input":"x","labels":["only"]}"#,
                "invalid_input",
            ),
            (
                r#"{"task":"embed","input":"x","labels":["a","b"]}"#,
                "invalid_input",
            ),
            (
                r#"{"task":"embed","input":"x","priority":"urgent"}"#,
                "invalid_input",
            ),
        ];
        for (body, code) in cases {
            let (status, got, _) = check(body).expect_err(body).parts();
            assert!(status.is_client_error(), "{body}");
            assert_eq!(got, code, "{body}");
        }
    }
}
