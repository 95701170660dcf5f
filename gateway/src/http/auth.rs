//! Optional API keys: `Authorization: Bearer <key>` on the routes that do or
//! reveal work. Health, metrics and the API description stay open so probes
//! and scrapers need no secret.

use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jetinfer_shared::config::Secret;
use std::sync::Arc;

/// The configured keys; empty means the API is open.
#[derive(Debug, Default)]
pub struct ApiKeys(Vec<Secret>);

impl ApiKeys {
    /// Keep the non-empty keys (`API_KEYS=""` means none).
    pub fn new(keys: Vec<Secret>) -> Self {
        ApiKeys(
            keys.into_iter()
                .filter(|k| !k.expose().is_empty())
                .collect(),
        )
    }

    /// Whether any key is required.
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Does `token` match a key? Compared in constant time per key, so the
    /// response time does not reveal how much of a guess was right.
    fn accepts(&self, token: &str) -> bool {
        self.0.iter().fold(false, |found, key| {
            found | constant_time_eq(key.expose().as_bytes(), token.as_bytes())
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: pass the request on when keys are off or its bearer token is known.
pub async fn require_key(
    State(keys): State<Arc<ApiKeys>>,
    request: Request,
    next: Next,
) -> Response {
    if !keys.enabled() {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(token) if keys.accepts(token) => next.run(request).await,
        _ => {
            crate::report::unauthorized();
            ApiError::Unauthorized.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_non_empty_keys_match() {
        let keys = ApiKeys::new(vec!["alpha".parse().unwrap(), "".parse().unwrap()]);
        assert!(keys.enabled());
        assert!(keys.accepts("alpha"));
        assert!(!keys.accepts("alph"));
        assert!(!keys.accepts("alphaa"));
        assert!(!keys.accepts(""));
        assert!(!ApiKeys::new(vec!["".parse().unwrap()]).enabled());
    }
}
