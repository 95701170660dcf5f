//! The REST surface: routes, shared state, and nothing about NATS internals
//! beyond what `/status` reads.
//!
//! # Layout
//! - [`error`]: `ApiError`, the one JSON error shape and its status codes.
//! - [`validate`]: JSON body → `TaskInput`, with the documented limits.
//! - [`infer`]: `POST /infer`.
//! - [`status`]: `GET /status`, `/healthz`, `/readyz`, `/recent_requests`.

pub mod error;
pub mod infer;
pub mod status;
pub mod validate;

use crate::batcher::Batcher;
use crate::config::Limits;
use crate::pending::Pending;
use crate::request_log::RequestLog;
use crate::stats::Counters;
use axum::extract::DefaultBodyLimit;
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
}

/// The router, kept apart from serving so tests can call it without a socket.
pub fn app(state: Arc<AppState>) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/infer", post(infer::infer))
        .route("/status", get(status::status))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/recent_requests", get(status::recent_requests))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
