//! `POST /v1/embeddings`, as OpenAI's API defines it, so an OpenAI client
//! pointed at jetinfer (`base_url`) embeds with it unchanged.
//!
//! Each input text becomes one `embed` request on the same batcher and queue
//! as `/infer` (an array is many requests, batched together, answered in
//! order); the answer is OpenAI's list, with the tokens the model read as
//! `usage`. Errors are OpenAI's shape, `{"error": {"message", "type",
//! "param", "code"}}`, `code` being the `/infer` error code; invalid requests
//! are 400 as OpenAI answers them.

use super::error::ApiError;
use super::infer::{await_reply, respond, submit, Queue};
use super::request::{has_visible, Text};
use super::AppState;
use crate::report::Finished;
use crate::waiters::Reply;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use jetinfer_shared::protocol::{ModelName, Priority, Task, TaskInput, TaskOutput};
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Most texts one call may embed (OpenAI's limit too).
pub const MAX_INPUTS: usize = 2048;

const FIELDS: &[&str] = &["input", "model", "encoding_format", "dimensions", "user"];

/// `input` of `POST /v1/embeddings`: one text or an array of them.
#[derive(Debug, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(Text),
    /// 1 to 2048 texts, embedded in order.
    Many(Texts),
}

/// The texts of an array `input`.
#[derive(Debug)]
pub struct Texts(pub Vec<Text>);

impl utoipa::PartialSchema for Texts {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("Text"))
            .description(Some(format!("1 to {MAX_INPUTS} texts, embedded in order.")))
            .min_items(Some(1))
            .max_items(Some(MAX_INPUTS))
            .into()
    }
}

impl utoipa::ToSchema for Texts {}

/// Body of `POST /v1/embeddings` (OpenAI's `CreateEmbeddingRequest`), as
/// [`check`] builds it from the JSON, field by field, and `/openapi.json`
/// describes it.
#[derive(Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// The text or texts to embed. Token arrays are not accepted: send text.
    pub input: EmbeddingInput,
    /// A model `GET /v1/models` lists with the `embed` task.
    pub model: ModelName,
    /// `float` (the default) or `base64`: each embedding's little-endian
    /// f32 bytes, base64-encoded, as OpenAI sends them.
    pub encoding_format: Option<EncodingFormat>,
    /// The model's own dimension (384 for all-minilm-l6-v2); any other is
    /// refused: these models cannot shorten their embeddings.
    #[schema(minimum = 1)]
    pub dimensions: Option<u64>,
    /// Ignored.
    pub user: Option<String>,
}

impl EmbeddingsRequest {
    /// The texts, in order.
    fn texts(&self) -> Vec<&str> {
        match &self.input {
            EmbeddingInput::One(text) => vec![text.0.as_str()],
            EmbeddingInput::Many(texts) => texts.0.iter().map(|t| t.0.as_str()).collect(),
        }
    }
}

/// How embeddings are written in the answer.
#[derive(Debug, Clone, Copy, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// Arrays of numbers.
    Float,
    /// Base64 of the little-endian f32 bytes.
    Base64,
}

/// One embedding as the answer writes it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// One input's embedding.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingData {
    /// Always `embedding`.
    pub object: &'static str,
    /// Position of its text in `input`.
    pub index: usize,
    /// The L2-normalised embedding.
    pub embedding: EmbeddingValue,
}

/// Tokens the model read.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Tokens of every input (special tokens included, after truncation at 256 a text).
    pub prompt_tokens: u64,
    /// The same: embeddings generate nothing.
    pub total_tokens: u64,
}

/// Body of a successful `POST /v1/embeddings`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: &'static str,
    /// One per input, in order.
    pub data: Vec<EmbeddingData>,
    /// The model that computed them.
    pub model: String,
    /// Tokens read.
    pub usage: Usage,
}

/// OpenAI's error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiError,
}

/// What went wrong, as OpenAI clients read it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiError {
    /// For a person.
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`, `authentication_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field concerned, when one is.
    pub param: Option<&'static str>,
    /// The `/infer` error code (`invalid_input`, `no_worker`, `timeout`, …).
    pub code: &'static str,
}

/// An error of this route: its status, and the body OpenAI clients parse.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: OpenAiError,
}

impl Refusal {
    /// A 400 about `param`.
    fn invalid(param: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: OpenAiError {
                message,
                kind: "invalid_request_error",
                param: Some(param),
                code,
            },
        }
    }
}

/// Any `/infer` error, with its status; validation errors become 400 as
/// OpenAI answers them.
impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        let (status, code, _) = e.parts();
        let status = match status {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        let kind = match status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        };
        Self {
            status,
            error: OpenAiError {
                message: e.to_string(),
                kind,
                param: None,
                code,
            },
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(OpenAiErrorBody { error: self.error })).into_response();
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

/// Check a body as OpenAI would, with messages naming the field.
fn check(body: &[u8], max_input_chars: usize) -> Result<EmbeddingsRequest, Refusal> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Refusal::invalid(
            "body",
            "invalid_json",
            format!("body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(Refusal::invalid(
            "body",
            "invalid_json",
            "body must be a JSON object".into(),
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Refusal::invalid(
            "body",
            "unknown_field",
            format!(
                "unrecognized request argument `{unknown}`; allowed: {}",
                FIELDS.join(", ")
            ),
        ));
    }
    let model = match fields.get("model") {
        Some(Value::String(m)) => m
            .parse::<ModelName>()
            .map_err(|e| Refusal::invalid("model", "invalid_input", e.to_string()))?,
        None | Some(Value::Null) => {
            return Err(Refusal::invalid(
                "model",
                "missing_field",
                "missing field `model`: name one `GET /v1/models` lists with the embed task".into(),
            ))
        }
        Some(_) => {
            return Err(Refusal::invalid(
                "model",
                "invalid_input",
                "`model` must be a string".into(),
            ))
        }
    };
    let encoding_format = match fields.get("encoding_format") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) if f == "float" => Some(EncodingFormat::Float),
        Some(Value::String(f)) if f == "base64" => Some(EncodingFormat::Base64),
        Some(other) => {
            return Err(Refusal::invalid(
                "encoding_format",
                "invalid_input",
                format!("`encoding_format` is {other}; it must be `float` or `base64`"),
            ))
        }
    };
    let dimensions = match fields.get("dimensions") {
        None | Some(Value::Null) => None,
        // JSON Schema counts 384.0 as an integer too.
        Some(Value::Number(n)) if n.as_f64().is_some_and(|d| d >= 1.0 && d.fract() == 0.0) => {
            n.as_f64().map(|d| d as u64)
        }
        Some(other) => {
            return Err(Refusal::invalid(
                "dimensions",
                "invalid_input",
                format!("`dimensions` is {other}; it must be a positive integer"),
            ))
        }
    };
    let user = match fields.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(other) => {
            return Err(Refusal::invalid(
                "user",
                "invalid_input",
                format!("`user` is {other}; it must be a string"),
            ))
        }
    };
    Ok(EmbeddingsRequest {
        input: input(&fields, max_input_chars)?,
        model,
        encoding_format,
        dimensions,
        user,
    })
}

/// `input`: a text, or 1 to [`MAX_INPUTS`] texts; each with a visible
/// character and within `MAX_INPUT_CHARS`.
fn input(fields: &Map<String, Value>, max_input_chars: usize) -> Result<EmbeddingInput, Refusal> {
    let bad = |code, message: String| Refusal::invalid("input", code, message);
    let texts: Vec<&Value> = match fields.get("input") {
        None | Some(Value::Null) => {
            return Err(bad("missing_field", "missing field `input`".into()))
        }
        Some(one @ Value::String(_)) => vec![one],
        Some(Value::Array(many)) if many.is_empty() => {
            return Err(bad(
                "invalid_input",
                "`input` must not be an empty array".into(),
            ))
        }
        Some(Value::Array(many)) if many.len() > MAX_INPUTS => {
            return Err(bad(
                "input_too_large",
                format!(
                    "`input` has {} texts; at most {MAX_INPUTS} are allowed",
                    many.len()
                ),
            ))
        }
        Some(Value::Array(many)) => many.iter().collect(),
        Some(_) => {
            return Err(bad(
                "invalid_input",
                "`input` must be a string or an array of strings".into(),
            ))
        }
    };
    let many = fields.get("input").is_some_and(Value::is_array);
    let texts = texts
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let at = if many {
                format!("`input[{i}]`")
            } else {
                "`input`".to_owned()
            };
            match value {
                Value::String(s) if !has_visible(s) => {
                    Err(bad("invalid_input", format!("{at} must not be empty")))
                }
                Value::String(s) if s.chars().count() > max_input_chars => Err(bad(
                    "input_too_large",
                    format!(
                        "{at} has {} characters; the limit is {max_input_chars} (MAX_INPUT_CHARS)",
                        s.chars().count()
                    ),
                )),
                Value::String(s) => Ok(Text(s.clone())),
                Value::Number(_) | Value::Array(_) => Err(bad(
                    "invalid_input",
                    format!("{at}: token arrays are not accepted; send the text"),
                )),
                _ => Err(bad("invalid_input", format!("{at} must be a string"))),
            }
        })
        .collect::<Result<Vec<Text>, _>>()?;
    Ok(match many {
        true => EmbeddingInput::Many(Texts(texts)),
        false => EmbeddingInput::One(texts.into_iter().next().expect("one text")),
    })
}

/// Embed `input` with `model`, in OpenAI's request and answer shapes.
#[utoipa::path(post, path = "/v1/embeddings", tag = "inference",
    request_body(content = EmbeddingsRequest, content_type = "application/json"),
    security((), ("api_key" = [])),
    responses(
        (status = 200, body = EmbeddingsResponse, description = "one embedding per input, in order"),
        (status = 400, body = OpenAiErrorBody, description = "the body is not a valid request: a field missing, unknown, of the wrong type or over a limit, token arrays, or `dimensions` other than the model's"),
        (status = 401, body = super::error::ErrorBody, description = "API keys are set and none or a wrong one was sent"),
        (status = 413, body = OpenAiErrorBody, description = "the body exceeds MAX_BODY_BYTES, or one text cannot travel in a task message"),
        (status = 429, body = OpenAiErrorBody, description = "fewer than one MAX_IN_FLIGHT slot per input is free; see Retry-After"),
        (status = 500, body = OpenAiErrorBody, description = "the model failed on an input"),
        (status = 503, body = OpenAiErrorBody, description = "no live worker serves the model's embed task (`no_worker`), or the work queue is full or unreachable; see Retry-After"),
        (status = 504, body = OpenAiErrorBody, description = "no answer within REQUEST_TIMEOUT_MS"),
    ))]
pub async fn embeddings(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match embed_all(&state, &body).await {
        Ok(answer) => Json(answer).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn embed_all(state: &AppState, body: &[u8]) -> Result<EmbeddingsResponse, Refusal> {
    let started = Instant::now();
    let checked = check(body, state.limits.max_input_chars)
        .inspect_err(|r| crate::metrics::request_refused(r.error.code))?;
    let texts = checked.texts();
    state
        .fleet
        .check(&checked.model, Task::Embed)
        .map_err(|e| Refusal::from(ApiError::from(e)))?;
    let n = texts.len();
    if n > state.limits.max_in_flight as usize {
        return Err(Refusal::invalid(
            "input",
            "input_too_large",
            format!(
                "`input` has {n} texts; this gateway holds at most {} requests at once (MAX_IN_FLIGHT)",
                state.limits.max_in_flight
            ),
        ));
    }
    let _slots = state
        .admission
        .admit_many(n as u32)
        .inspect_err(|e| state.report.shed(e))?;
    let timeout_ms = state.limits.request_timeout_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    // Every text is queued before any answer is awaited, so they share batches.
    let mut waiting = Vec::with_capacity(n);
    for text in &texts {
        let id = Uuid::new_v4();
        let input = TaskInput::Embed {
            text: text.to_string(),
        };
        let queue = Queue {
            model: checked.model.clone(),
            priority: Priority::Normal,
        };
        let (guard, answer) = submit(state, id, input, queue, None).await?;
        waiting.push((id, guard, answer));
    }
    let replies =
        futures::future::join_all(waiting.into_iter().map(|(id, guard, answer)| async move {
            let reply = await_reply(answer, id, timeout_ms, deadline).await;
            (id, guard, reply)
        }))
        .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut data = Vec::with_capacity(n);
    let mut tokens = 0u64;
    let mut model = checked.model.to_string();
    let mut first_error = None;
    for (index, ((id, _guard, reply), text)) in replies.into_iter().zip(&texts).enumerate() {
        if let Ok(Reply::Done { tokens: t, .. }) = &reply {
            tokens += u64::from(*t);
        }
        let answer = respond(reply, id, Task::Embed, latency_ms);
        state
            .report
            .answered(Finished {
                request_id: id,
                task: Task::Embed,
                input: text,
                latency_ms,
                worker_id: answer.worker_id.clone(),
                retries: answer.retries,
                outcome: answer.result.as_ref().map(|r| &r.output),
            })
            .await;
        match answer.result {
            Ok(done) => {
                model = done.model;
                if let TaskOutput::Embedding { embedding } = done.output {
                    data.push((index, embedding));
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e.into());
    }
    let dims = data.first().map_or(0, |(_, e)| e.len());
    if let Some(asked) = checked.dimensions.filter(|d| *d != dims as u64) {
        return Err(Refusal::invalid(
            "dimensions",
            "invalid_input",
            format!(
                "{model} returns {dims} dimensions and cannot shorten them; `dimensions` must be {dims} or omitted, not {asked}"
            ),
        ));
    }
    Ok(EmbeddingsResponse {
        object: "list",
        data: data
            .into_iter()
            .map(|(index, embedding)| EmbeddingData {
                object: "embedding",
                index,
                embedding: match checked.encoding_format {
                    Some(EncodingFormat::Base64) => {
                        EmbeddingValue::Base64(little_endian_base64(&embedding))
                    }
                    _ => EmbeddingValue::Float(embedding),
                },
            })
            .collect(),
        model,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
}

/// Base64 of the little-endian bytes of `values`, as OpenAI's
/// `encoding_format: base64` writes an embedding.
fn little_endian_base64(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> (&'static str, &'static str, String) {
        match check(body.as_bytes(), 20) {
            Ok(_) => panic!("{body} accepted"),
            Err(r) => (r.error.param.unwrap_or("-"), r.error.code, r.error.message),
        }
    }

    #[test]
    fn accepts_what_openai_clients_send() {
        let one = check(br#"{"input":"hi","model":"All-MiniLM-L6-v2"}"#, 20).unwrap();
        assert_eq!(one.texts(), ["hi"]);
        assert_eq!(one.model.as_str(), "all-minilm-l6-v2");
        assert_eq!(one.encoding_format, None);
        let many = check(
            br#"{"input":["a","b"],"model":"m","encoding_format":"base64","dimensions":384,"user":"u"}"#,
            20,
        )
        .unwrap();
        assert_eq!(many.texts(), ["a", "b"]);
        assert_eq!(many.encoding_format, Some(EncodingFormat::Base64));
        assert_eq!(many.dimensions, Some(384));
        assert_eq!(many.user.as_deref(), Some("u"));
    }

    #[test]
    fn refusals_name_the_parameter() {
        assert_eq!(refused(r#"{"input":"hi"}"#).0, "model");
        assert_eq!(refused(r#"{"model":"m"}"#).1, "missing_field");
        assert_eq!(refused(r#"{"input":[],"model":"m"}"#).0, "input");
        let (param, code, message) = refused(r#"{"input":[[1,2]],"model":"m"}"#);
        assert_eq!((param, code), ("input", "invalid_input"));
        assert_eq!(
            message,
            "`input[0]`: token arrays are not accepted; send the text"
        );
        assert_eq!(
            refused(r#"{"input":["ok"," "],"model":"m"}"#).2,
            "`input[1]` must not be empty"
        );
        assert_eq!(
            refused(r#"{"input":"x","model":"m","encoding_format":"int8"}"#).0,
            "encoding_format"
        );
        assert_eq!(
            refused(r#"{"input":"x","model":"m","dimensions":0}"#).0,
            "dimensions"
        );
        assert_eq!(
            refused(r#"{"input":"x","model":"m","temperature":1}"#).1,
            "unknown_field"
        );
        assert_eq!(
            refused(&format!(r#"{{"input":"{}","model":"m"}}"#, "x".repeat(21))).1,
            "input_too_large"
        );
        let too_many = serde_json::json!({"input": vec!["x"; MAX_INPUTS + 1], "model": "m"});
        assert_eq!(refused(&too_many.to_string()).1, "input_too_large");
    }

    #[test]
    fn integral_numbers_and_nulls_are_what_the_schema_allows() {
        assert_eq!(
            refused(r#"{"input":"x","model":"m","dimensions":1.5}"#).0,
            "dimensions"
        );
        let integral = check(
            br#"{"input":"x","model":"m","dimensions":384.0,"user":null}"#,
            20,
        );
        assert_eq!(integral.unwrap().dimensions, Some(384));
    }

    #[test]
    fn base64_is_the_little_endian_floats() {
        let encoded = little_endian_base64(&[1.0, -0.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(bytes, [0, 0, 128, 63, 0, 0, 0, 191]);
    }
}
