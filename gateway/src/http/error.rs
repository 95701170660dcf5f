//! The one error type of the REST API and its mapping to status codes.
//!
//! Every failure a client can see is an [`ApiError`]; its JSON body is always
//! `{"error": "<code>", "message": "<what is wrong>"}` plus the request id
//! when one was assigned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use uuid::Uuid;

/// What went wrong with a request, from the client's point of view.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not a JSON object.
    #[error("{0}")]
    InvalidJson(String),
    /// The body is declared neither as JSON nor as an image.
    #[error("expected `Content-Type: application/json` (or another `application/*+json`), or `image/png` / `image/jpeg` for a raw photo upload with `?task=classify_image`")]
    UnsupportedMediaType,
    /// No route has this path.
    #[error("no route {0}; see /openapi.json")]
    NotFound(String),
    /// The path exists, not with this method (the `Allow` header lists the methods it has).
    #[error("{method} is not allowed on {path}; see the Allow header")]
    MethodNotAllowed {
        /// The method sent.
        method: String,
        /// The path it was sent to.
        path: String,
    },
    /// The body exceeds `MAX_BODY_BYTES` (JSON) or `MAX_IMAGE_BYTES` (a raw
    /// upload); the text names the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The photo is not a PNG or JPEG that decodes.
    #[error("{0}")]
    InvalidImage(String),
    /// The photo declares more pixels than the gateway decodes.
    #[error("{0}")]
    ImageTooLarge(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// The request cannot travel in a task message: on its own it exceeds the
    /// NATS server's `max_payload`, so no batch could ever carry it.
    #[error("this request takes {size} bytes in a task message; at most {limit} fit (the NATS server's max_payload, less the batch envelope)")]
    MessageTooLarge {
        /// Encoded size of the request in a batch.
        size: usize,
        /// What fits: the server's `max_payload`, less the batch envelope.
        limit: usize,
    },
    /// The answer to this request alone exceeds the NATS server's `max_payload`
    /// (e.g. similarity echoing very many candidates): refused at once, never
    /// after a timeout.
    #[error("{message}")]
    ResultTooLarge {
        /// What the worker said, with the sizes.
        message: String,
        /// The refused request.
        request_id: Uuid,
    },
    /// A field the API does not know (often a typo), with the fields its
    /// object does know, so the fix is in the message.
    #[error("unknown field `{field}`; allowed: {}", allowed.join(", "))]
    UnknownField {
        /// The field, with its path (`input.k`).
        field: String,
        /// The fields of the object it was found in.
        allowed: &'static [&'static str],
    },
    /// `task` names no task.
    #[error("{0}")]
    UnknownTask(String),
    /// A field has the wrong type or an empty/invalid value.
    #[error("{0}")]
    InvalidInput(String),
    /// A text or list exceeds a documented limit.
    #[error("{0}")]
    TooLarge(String),
    /// The `Idempotency-Key` header is not 1 to 255 visible ASCII characters.
    #[error("the Idempotency-Key header must be 1 to 255 visible ASCII characters (no spaces)")]
    InvalidIdempotencyKey,
    /// The `Idempotency-Key` was sent before with another body; the key
    /// stands for that request until `IDEMPOTENCY_TTL_S` after it.
    #[error("this Idempotency-Key was already used with another request body; use a new key for a new request")]
    IdempotencyKeyReused,
    /// `POST /infer/async` was sent an `Idempotency-Key`: its request id
    /// already names the request, and keys are for the synchronous `/infer`.
    #[error("POST /infer/async takes no Idempotency-Key: its 202 answer names the request (request_id, status_url); poll that instead of resending, or use POST /infer with the key")]
    KeyOnAsync,
    /// `GET` or `DELETE /result/{id}` named no async request this gateway's
    /// results bucket holds.
    #[error("{0}")]
    UnknownResult(String),
    /// A query parameter is malformed.
    #[error("{0}")]
    InvalidQuery(String),
    /// The work queue did not take the request.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// The request that was refused.
        request_id: Uuid,
    },
    /// JetStream gave up on the request's batch: every delivery failed, or a
    /// worker terminated it because its deadline had passed.
    #[error("request {request_id} failed after {attempts} attempt(s): {reason}")]
    Abandoned {
        /// Deliveries made.
        attempts: u64,
        /// Why it stopped.
        reason: &'static str,
        /// The failed request.
        request_id: Uuid,
    },
    /// No answer within `REQUEST_TIMEOUT_MS`.
    #[error("no answer within {timeout_ms} ms")]
    Timeout {
        /// The configured timeout.
        timeout_ms: u64,
        /// The request that timed out.
        request_id: Uuid,
    },
    /// A worker ran the request and reported an error.
    #[error("{message}")]
    Worker {
        /// The worker's error text.
        message: String,
        /// The failed request.
        request_id: Uuid,
    },
    /// No live worker serves the request's model for its task (and none
    /// did within `NO_WORKER_GRACE_MS`): refused at once, not after a timeout.
    #[error(transparent)]
    NoWorker(#[from] crate::routing::NoWorker),
    /// The gateway is stopping.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// API keys are configured and the request has none or a wrong one.
    #[error("missing or unknown API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// `MAX_IN_FLIGHT` requests are already waiting on this gateway.
    #[error("the gateway is at its limit of {0} requests in flight (MAX_IN_FLIGHT); retry later")]
    Overloaded(u32),
}

/// The JSON body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_input`, `overloaded`, `timeout`.
    #[schema(example = "invalid_input")]
    pub error: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// The request concerned, once the gateway accepted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
}

impl ApiError {
    /// Status code and machine-readable code, in one exhaustive match.
    pub(crate) fn parts(&self) -> (StatusCode, &'static str, Option<Uuid>) {
        match self {
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json", None),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                None,
            ),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None)
            }
            ApiError::ImageTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large", None),
            ApiError::InvalidImage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image", None),
            ApiError::MessageTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None)
            }
            ApiError::ResultTooLarge { request_id, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "result_too_large",
                Some(*request_id),
            ),
            ApiError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query", None),
            ApiError::InvalidIdempotencyKey => {
                (StatusCode::BAD_REQUEST, "invalid_idempotency_key", None)
            }
            ApiError::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                None,
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::KeyOnAsync => (
                StatusCode::BAD_REQUEST,
                "idempotency_key_not_supported",
                None,
            ),
            ApiError::UnknownResult(_) => (StatusCode::NOT_FOUND, "result_not_found", None),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::MissingField(_) => (StatusCode::UNPROCESSABLE_ENTITY, "missing_field", None),
            ApiError::UnknownField { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unknown_field", None)
            }
            ApiError::UnknownTask(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_task", None),
            ApiError::InvalidInput(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", None),
            ApiError::TooLarge(_) => (StatusCode::UNPROCESSABLE_ENTITY, "input_too_large", None),
            ApiError::Unavailable { request_id, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                Some(*request_id),
            ),
            ApiError::Abandoned { request_id, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "retries_exhausted",
                Some(*request_id),
            ),
            ApiError::Timeout { request_id, .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "timeout", Some(*request_id))
            }
            ApiError::Worker { request_id, .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "worker_error",
                Some(*request_id),
            ),
            ApiError::NoWorker(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_worker", None),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", None),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "overloaded", None),
        }
    }
}

impl ApiError {
    /// The status code and the JSON body every transport answers with.
    pub(crate) fn body(&self) -> (StatusCode, ErrorBody) {
        let (status, code, request_id) = self.parts();
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
            request_id,
        };
        (status, body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.body();
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match status {
            // Shed load: tell well-behaved clients when to come back.
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
