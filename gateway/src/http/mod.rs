//! The REST surface: routes, shared state, and nothing about NATS internals
//! beyond what `/status` reads.
//!
//! # Layout
//! - [`auth`]: optional API keys (bearer tokens).
//! - [`admission`]: the `MAX_IN_FLIGHT` slots; a request without one gets 429.
//! - [`error`]: `ApiError`, the one JSON error shape and its status codes.
//! - [`request`]: the body of `POST /infer`, one type per task shape, described in the OpenAPI document.
//! - [`validate`]: JSON body → [`request::InferRequest`], with the documented limits.
//! - [`infer`]: `POST /infer`, step by step: read, admit, submit, await the reply, respond.
//! - [`openapi`]: `GET /openapi.json`, generated from the handlers and their types.
//! - [`status`]: `GET /status`, `/healthz`, `/readyz`, `/recent_requests`, `/metrics`.

pub mod admission;
pub mod auth;
pub mod error;
pub mod infer;
pub mod openapi;
pub mod request;
pub mod status;
pub mod validate;

use crate::batcher::Batcher;
use crate::config::Limits;
use crate::report::Report;
use crate::waiters::Waiters;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
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
}

/// Every route with its key check and body limit, for `run` to serve.
/// Work and what reveals it need a key when `keys` has any; probes do not.
pub fn app(state: Arc<AppState>, keys: auth::ApiKeys) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let guarded = Router::new()
        .route("/infer", post(infer::infer))
        .route("/status", get(status::status))
        .route("/recent_requests", get(status::recent_requests))
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
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
