//! The REST surface: routes, shared state, and nothing about NATS internals
//! beyond what `/status` reads.
//!
//! # Layout
//! - [`auth`]: optional API keys (bearer tokens).
//! - [`admission`]: the `MAX_IN_FLIGHT` slots; a request without one gets 429.
//! - [`error`]: `ApiError`, the one JSON error shape and its status codes;
//!   unknown paths, wrong methods and non-JSON bodies get it too (here).
//! - [`request`]: the body of `POST /infer`, one type per task shape, described in the OpenAPI document.
//! - [`image`]: photos decoded and cropped off the async threads, as many at once as cores.
//! - [`validate`]: JSON body → [`request::InferRequest`], with the documented limits.
//! - [`infer`]: `POST /infer`, step by step: read, admit, submit, await the reply, respond.
//! - [`deferred`]: `POST /infer/async`, `GET` and `DELETE /result/{id}`: the same
//!   requests answered later, from the results bucket, by any gateway.
//! - [`models`]: `GET /v1/models`, the models live workers serve (OpenAI's list shape).
//! - [`openai`]: `POST /v1/embeddings`, OpenAI's embeddings API on the same batcher and queue.
//! - [`keyed`]: the HTTP side of `Idempotency-Key`: the header, who sent it, the replay.
//! - [`openapi`]: `GET /openapi.json`, generated from the handlers and their types.
//! - [`status`]: `GET /status`, `/healthz`, `/readyz`, `/recent_requests`, `/metrics`.

pub mod admission;
pub mod auth;
pub mod deferred;
pub mod error;
pub mod image;
pub mod infer;
pub mod keyed;
pub mod models;
pub mod openai;
pub mod openapi;
pub mod request;
pub mod status;
pub mod validate;

use crate::batcher::Batcher;
use crate::config::Limits;
use crate::report::Report;
use crate::waiters::Waiters;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use std::sync::Arc;

/// Everything a handler needs; built once by `run`.
pub struct AppState {
    /// This gateway's id.
    pub gateway_id: String,
    /// Where accepted requests go.
    pub batcher: Batcher,
    /// Requests registered and not yet answered (buffered or published).
    pub waiters: Waiters,
    /// Where every outcome is counted and recorded.
    pub report: Arc<Report>,
    /// Input limits and the request timeout.
    pub limits: Limits,
    /// NATS connection, for `/status` and `/healthz`.
    pub nats: async_nats::Client,
    /// JetStream context, for `/status`.
    pub js: async_nats::jetstream::Context,
    /// The `MAX_IN_FLIGHT` slots.
    pub admission: admission::Admission,
    /// Claims and stored answers of requests sent with an `Idempotency-Key`.
    pub idempotency: crate::idempotency::Idempotency,
    /// Decodes `classify_image` photos into crops.
    pub images: image::Images,
    /// The model of a request that names none (`MODEL_ROUTES`).
    pub routes: crate::routing::ModelRoutes,
    /// What live workers serve: requests nobody can compute get 503 `no_worker`.
    pub fleet: crate::routing::Fleet,
    /// Answers reused for identical requests.
    pub cache: crate::cache::AnswerCache,
    /// The results bucket of async requests.
    pub deferred: crate::deferred::AsyncResults,
    /// How long an async request is kept (`ASYNC_RESULT_TTL_S`): its deadline.
    pub async_ttl: std::time::Duration,
}

/// Every route with its key check and body limit, for `run` to serve.
/// Work and what reveals it need a key when `keys` has any; probes do not.
pub fn app(state: Arc<AppState>, keys: jetinfer_shared::keys::Keys) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let guarded = Router::new()
        .route("/infer", post(infer::infer))
        .route("/infer/async", post(deferred::submit))
        .route(
            "/result/{id}",
            get(deferred::result).delete(deferred::delete),
        )
        .route("/status", get(status::status))
        .route("/recent_requests", get(status::recent_requests))
        .route("/v1/models", get(models::models))
        .route("/v1/embeddings", post(openai::embeddings))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(keys),
            auth::require_key,
        ));
    Router::new()
        .merge(guarded)
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .route("/openapi.json", get(openapi::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Unknown paths get the JSON error envelope too.
async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

/// A known path with another method: the envelope, and axum adds `Allow`.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::request::{is_image, is_json};

    #[test]
    fn json_media_types_as_the_rfc_spells_them() {
        for json in [
            "application/json",
            "APPLICATION/JSON",
            "application/json; charset=utf-8",
            " Application/Json ;charset=UTF-8",
            "application/problem+json",
            "application/vnd.api+JSON",
        ] {
            assert!(is_json(json), "{json}");
        }
        for other in [
            "application/jsonx",
            "application/json-seq",
            "application/+json",
            "text/json",
            "application/x-www-form-urlencoded",
            "json",
            "",
            "application/ json",
        ] {
            assert!(!is_json(other), "{other}");
        }
        for image in [
            "image/png",
            "IMAGE/JPEG",
            "image/webp; q=1",
            " image/x-icon ",
        ] {
            assert!(is_image(image), "{image}");
        }
        for other in [
            "image/",
            "image",
            "images/png",
            "image/ png",
            "application/json",
            "",
        ] {
            assert!(!is_image(other), "{other}");
        }
    }
}
