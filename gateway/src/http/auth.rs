//! Optional API keys: `Authorization: Bearer <key>` on the routes that do or
//! reveal work. Health, metrics and the API description stay open so probes
//! and scrapers need no secret.

use super::error::ApiError;
use super::keyed::Tenant;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::{ready, BoxFuture, Either, Ready};
use jetinfer_shared::keys::Keys;
use std::sync::Arc;

/// Middleware: pass the request on when keys are off or its bearer token is
/// known; an accepted one also names the request's [`Tenant`].
///
/// A plain function returning the next service's future, not an `async fn`:
/// this future lives as long as the request waits for its answer, and an
/// `async fn` would keep a second copy of the request's slot beside it.
pub fn require_key(
    State(keys): State<Arc<Keys>>,
    mut request: Request,
    next: Next,
) -> Either<BoxFuture<'static, Response>, Ready<Response>> {
    if !keys.enabled() {
        return Either::Left(Box::pin(next.run(request)));
    }
    if keys.accepts_bearer(request.headers()) {
        let sent = request.headers().get(header::AUTHORIZATION);
        let tenant = sent.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        request
            .extensions_mut()
            .insert(Tenant(tenant.unwrap_or_default()));
        return Either::Left(Box::pin(next.run(request)));
    }
    crate::report::unauthorized();
    Either::Right(ready(ApiError::Unauthorized.into_response()))
}
