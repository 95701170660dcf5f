//! The REST surface: routes, shared state, and nothing about NATS internals
//! beyond what `/status` reads.
//!
//! # Layout
//! - [`auth`]: optional API keys (bearer tokens).
//! - [`error`]: `ApiError`, the one JSON error shape and its status codes.
//! - [`validate`]: JSON body → `TaskInput`, with the documented limits.
//! - [`infer`]: `POST /infer`.
//! - [`openapi`]: `GET /openapi.json`, generated from the handlers and their types.
//! - [`status`]: `GET /status`, `/healthz`, `/readyz`, `/recent_requests`, `/metrics`.

pub mod auth;
pub mod error;
pub mod infer;
pub mod openapi;
pub mod status;
pub mod validate;

use crate::batcher::Batcher;
use crate::config::Limits;
use crate::pending::Pending;
use crate::request_log::RequestLog;
use crate::stats::Counters;
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
    /// Requests waiting for answers.
    pub pending: Pending,
    /// Request counters.
    pub counters: Arc<Counters>,
    /// Input limits and the request timeout.
    pub limits: Limits,
    /// Finished requests, newest last.
    pub requests: RequestLog,
    /// NATS connection, for `/status` and `/healthz`.
    pub nats: async_nats::Client,
    /// JetStream context, for `/status`.
    pub js: async_nats::jetstream::Context,
    /// One permit per request this gateway may hold (`MAX_IN_FLIGHT`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

/// The router, kept apart from serving so tests can call it without a socket.
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
