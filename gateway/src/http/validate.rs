//! Turning a JSON body into an [`InferRequest`], with an error that says exactly what is wrong.
//!
//! The body is parsed as a generic JSON value first and checked field by
//! field, so messages name the field and the limit rather than echoing a
//! serde type error. What passes is built into the types `/openapi.json`
//! describes ([`super::request`]).

use super::error::ApiError;
use super::request::{has_visible, InferRequest, Labels, Photo, SimilarityInput, Text};
use crate::config::Limits;
use jetinfer_shared::protocol::{ModelName, Priority, Task};
use serde_json::{Map, Value};

const FIELDS: &[&str] = &["task", "input", "labels", "priority", "model"];
const SIMILARITY_FIELDS: &[&str] = &["query", "candidates"];

/// Validate a raw body against `limits`.
pub fn parse(body: &[u8], limits: &Limits) -> Result<InferRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidJson(format!("body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::InvalidJson("body must be a JSON object".into()));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::UnknownField {
            field: unknown.clone(),
            allowed: FIELDS,
        });
    }
    let task: Task = match fields.get("task") {
        None | Some(Value::Null) => return Err(ApiError::MissingField("task")),
        Some(Value::String(name)) => name
            .parse()
            .map_err(|e| ApiError::UnknownTask(format!("{e}")))?,
        Some(_) => return Err(ApiError::InvalidInput("`task` must be a string".into())),
    };
    let priority: Option<Priority> = optional_name(&fields, "priority")?;
    let model: Option<ModelName> = optional_name(&fields, "model")?;
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
            model,
        },
        Task::Echo => InferRequest::Echo {
            input: text(input, "input", limits)?,
            priority,
            model,
        },
        Task::Similarity => InferRequest::Similarity {
            input: similarity(input, limits)?,
            priority,
            model,
        },
        Task::Classify => InferRequest::Classify {
            input: text(input, "input", limits)?,
            labels: labels(&fields, limits)?,
            priority,
            model,
        },
        Task::ClassifyImage => InferRequest::ClassifyImage {
            input: base64_image(input)?,
            priority,
            model,
        },
    })
}

/// An optional field holding a name (`priority`, `model`): absent or null is
/// `None`, a string must parse (its error says what the names are).
fn optional_name<T: std::str::FromStr>(
    fields: &Map<String, Value>,
    field: &str,
) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) => name
            .parse()
            .map(Some)
            .map_err(|e| ApiError::InvalidInput(format!("`{field}`: {e}"))),
        Some(_) => Err(ApiError::InvalidInput(format!(
            "`{field}` must be a string"
        ))),
    }
}

/// The bytes of a base64 photo ([`decode_base64`]); whether they are an
/// image is for [`super::image`] to find out.
fn base64_image(value: &Value) -> Result<Photo, ApiError> {
    let Value::String(encoded) = value else {
        return Err(ApiError::InvalidImage(
            "`input` of task `classify_image` must be a string: the photo, base64-encoded".into(),
        ));
    };
    decode_base64(encoded)
        .map(Photo)
        .map_err(|e| ApiError::InvalidImage(format!("`input` {e}")))
}

/// Base64 as people paste it: standard alphabet, padding optional,
/// whitespace ignored (`base64` wraps its output at 76 columns), a
/// `data:image/...;base64,` prefix allowed.
pub(crate) fn decode_base64(encoded: &str) -> Result<Vec<u8>, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let encoded = match encoded.split_once(";base64,") {
        Some((scheme, data)) if scheme.starts_with("data:") => data,
        _ => encoded,
    };
    let compact: Vec<u8> = encoded
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err("must not be empty".into());
    }
    LENIENT
        .decode(&compact)
        .map_err(|e| format!("is not valid base64: {e}"))
}

/// A string with a visible character ([`has_visible`]), within the length limit.
pub(super) fn text(value: &Value, field: &str, limits: &Limits) -> Result<Text, ApiError> {
    let Value::String(s) = value else {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must be a string"
        )));
    };
    if !has_visible(s) {
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
    if let Some(unknown) = obj
        .keys()
        .find(|k| !SIMILARITY_FIELDS.contains(&k.as_str()))
    {
        return Err(ApiError::UnknownField {
            field: format!("input.{unknown}"),
            allowed: SIMILARITY_FIELDS,
        });
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

/// The labels given, each once, or `None` for the default ones.
fn labels(fields: &Map<String, Value>, limits: &Limits) -> Result<Option<Labels>, ApiError> {
    let Some(value) = fields.get("labels").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let labels = texts(value, "labels", limits)?;
    if labels.len() < 2 {
        return Err(ApiError::InvalidInput(
            "`labels` needs at least two labels to choose from".into(),
        ));
    }
    for (later, label) in labels.iter().enumerate() {
        if let Some(first) = labels[..later].iter().position(|l| l == label) {
            return Err(ApiError::InvalidInput(format!(
                "`labels` lists {:?} twice (labels[{first}] and labels[{later}]); each label must be different",
                label.0
            )));
        }
    }
    Ok(Some(Labels(labels)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::Pending;
    use jetinfer_shared::protocol::TaskInput;

    const LIMITS: Limits = Limits {
        max_body_bytes: 1024,
        max_image_bytes: 4096,
        max_input_chars: 10,
        max_items: 3,
        request_timeout_ms: 1000,
        max_in_flight: 8,
    };

    fn check(body: &str) -> Result<InferRequest, ApiError> {
        parse(body.as_bytes(), &LIMITS)
    }

    impl Pending {
        fn ready(self) -> TaskInput {
            match self {
                Pending::Ready(input) => input,
                image => panic!("not a text input: {image:?}"),
            }
        }
    }

    #[test]
    fn accepts_every_task_shape() {
        let v = check(r#"{"task":"embed","input":"hi"}"#).unwrap();
        assert_eq!(v.priority(), Priority::Normal);
        assert_eq!(v.model(), None);
        let named = check(r#"{"task":"embed","input":"hi","model":"All-MiniLM-L6-v2"}"#).unwrap();
        assert_eq!(named.model().map(|m| m.as_str()), Some("all-minilm-l6-v2"));
        assert_eq!(
            v.into_input().ready(),
            TaskInput::Embed { text: "hi".into() }
        );
        let v = check(r#"{"task":"classify","input":"hi","priority":"high"}"#).unwrap();
        assert_eq!(v.priority(), Priority::High);
        assert_eq!(
            v.into_input().ready(),
            TaskInput::Classify {
                text: "hi".into(),
                labels: vec!["positive".into(), "negative".into()]
            }
        );
        assert_eq!(
            check(r#"{"task":"similarity","input":{"query":"q","candidates":["a","b"]}}"#)
                .unwrap()
                .into_input()
                .ready(),
            TaskInput::Similarity {
                query: "q".into(),
                candidates: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            check(r#"{"task":"echo","input":"hi","priority":null}"#)
                .unwrap()
                .into_input()
                .ready(),
            TaskInput::Echo { text: "hi".into() }
        );
        // Padding optional, whitespace and a data: prefix ignored.
        for encoded in ["aGk=", "aGk", "aG\nk=", "data:image/png;base64,aGk="] {
            let body = serde_json::json!({"task": "classify_image", "input": encoded});
            let pending = check(&body.to_string()).unwrap().into_input();
            assert_eq!(pending, Pending::Image(b"hi".to_vec()), "{encoded}");
        }
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
            (
                r#"{"task":"embed","input":"x","model":"a.b"}"#,
                "invalid_input",
            ),
            (r#"{"task":"embed","input":"x","model":7}"#, "invalid_input"),
            (
                r#"{"task":"classify_image","input":"%%%"}"#,
                "invalid_image",
            ),
            (r#"{"task":"classify_image","input":" "}"#, "invalid_image"),
            (r#"{"task":"classify_image","input":[1]}"#, "invalid_image"),
            (
                r#"{"task":"classify_image","input":"aGk=","labels":["a","b"]}"#,
                "invalid_input",
            ),
        ];
        for (body, code) in cases {
            let (status, got, _) = check(body).expect_err(body).parts();
            assert!(status.is_client_error(), "{body}");
            assert_eq!(got, code, "{body}");
        }
    }

    /// The model drops controls, format characters and combining marks: a
    /// text made only of them would be embedded as the empty text.
    #[test]
    fn text_without_a_visible_character_is_empty() {
        use serde_json::json;
        let blanks = [
            "\u{200b}",
            "\0",
            "\u{ad}",
            "\u{301}\u{308}",
            " \u{feff}\u{2060} ",
            "\u{200d}\t",
        ];
        for blank in blanks {
            let bodies = [
                json!({"task": "embed", "input": blank}),
                json!({"task": "similarity", "input": {"query": blank, "candidates": ["a"]}}),
                json!({"task": "similarity", "input": {"query": "q", "candidates": ["a", blank]}}),
                json!({"task": "classify", "input": "x", "labels": ["a", blank]}),
            ];
            for body in bodies {
                let error = check(&body.to_string()).expect_err("blank");
                assert_eq!(error.parts().1, "invalid_input", "{body}");
                assert!(
                    error.to_string().ends_with("must not be empty"),
                    "{body}: {error}"
                );
            }
        }
        for visible in ["e\u{301}", "\u{e9}", "a\u{200b}", "\u{4e2d}"] {
            let body = json!({"task": "embed", "input": visible});
            assert!(check(&body.to_string()).is_ok(), "{body}");
        }
    }

    #[test]
    fn duplicate_labels_are_named() {
        let error = check(r#"{"task":"classify","input":"x","labels":["good","bad","good"]}"#)
            .expect_err("a label twice");
        assert_eq!(error.parts().1, "invalid_input");
        let message = error.to_string();
        assert!(message.contains(r#""good""#), "{message}");
        assert!(
            message.contains("labels[0]") && message.contains("labels[2]"),
            "{message}"
        );
        assert!(check(r#"{"task":"classify","input":"x","labels":["good","Good"]}"#).is_ok());
    }

    #[test]
    fn an_unknown_nested_field_lists_the_nested_ones() {
        let error =
            check(r#"{"task":"similarity","input":{"query":"q","candidates":["a"],"k":1}}"#)
                .expect_err("k is not a field");
        assert_eq!(error.parts().1, "unknown_field");
        assert_eq!(
            error.to_string(),
            "unknown field `input.k`; allowed: query, candidates"
        );
        let error = check(r#"{"task":"embed","input":"x","lables":["a"]}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown field `lables`; allowed: task, input, labels, priority, model"
        );
    }
}
