//! Optional API keys: `Authorization: Bearer <key>` on the routes that do or
//! reveal work. Health, metrics and the API description stay open so probes
//! and scrapers need no secret.

use super::error::ApiError;
use super::keyed::Tenant;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jetinfer_shared::keys::Keys;
use std::sync::Arc;

/// Middleware: pass the request on when keys are off or its bearer token is
/// known; an accepted one also names the request's [`Tenant`].
pub async fn require_key(
    State(keys): State<Arc<Keys>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !keys.enabled() {
        return next.run(request).await;
    }
    if keys.accepts_bearer(request.headers()) {
        let sent = request.headers().get(header::AUTHORIZATION);
        let tenant = sent.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        request
            .extensions_mut()
            .insert(Tenant(tenant.unwrap_or_default()));
        return next.run(request).await;
    }
    crate::report::unauthorized();
    ApiError::Unauthorized.into_response()
}
