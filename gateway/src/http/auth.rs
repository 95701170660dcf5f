//! Optional API keys: `Authorization: Bearer <key>` on the routes that do or
//! reveal work. Health, metrics and the API description stay open so probes
//! and scrapers need no secret.

use super::error::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jetinfer_shared::keys::Keys;
use std::sync::Arc;

/// Middleware: pass the request on when keys are off or its bearer token is known.
pub async fn require_key(State(keys): State<Arc<Keys>>, request: Request, next: Next) -> Response {
    if !keys.enabled() {
        return next.run(request).await;
    }
    if keys.accepts_bearer(request.headers()) {
        return next.run(request).await;
    }
    crate::report::unauthorized();
    ApiError::Unauthorized.into_response()
}
