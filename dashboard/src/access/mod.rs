//! Who may look. With keys configured (`DASHBOARD_KEYS`, by default the
//! gateway's `API_KEYS`) the page, `/api/*` and the live stream answer 401
//! until the browser logs in on a small form, which sets an `HttpOnly;
//! SameSite=Strict` session cookie; scripts may send `Authorization: Bearer
//! <key>` to `/api/*` instead. `/healthz` (for healthchecks) and the static
//! assets (code and style, no data) stay open. Without keys everything is
//! open, as protected mode ([`jetinfer_shared::exposure`]) allows on loopback
//! or with `ALLOW_ANONYMOUS` only.
//!
//! The page itself answers an unknown visitor 401 *with the login form as
//! its body*: browsers render it like any page, while a script or a monitor
//! polling `/` sees the truth (not logged in) instead of a 200 that looks
//! like the dashboard.
//!
//! # Layout
//! - `sessions`: logged-in browsers, kept by token digest, with their expiry.
//! - `login`: the form, `POST /login`, `POST /logout` and the cookie.

mod login;
mod sessions;

pub use login::LOGOUT_BUTTON;

use crate::server::envelope;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use jetinfer_shared::config::Secret;
use jetinfer_shared::keys::Keys;
use sessions::{SessionId, Sessions};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The dashboard's door: its keys, and the sessions logins opened.
pub struct Access {
    keys: Keys,
    sessions: Arc<Sessions>,
}

impl Access {
    /// A door for `keys` (none: open) whose logins last `session_ttl`.
    pub fn new(keys: Vec<Secret>, session_ttl: Duration) -> Self {
        Self {
            keys: Keys::new(keys),
            sessions: Arc::new(Sessions::new(session_ttl)),
        }
    }

    /// Whether a key is required at all.
    pub fn enabled(&self) -> bool {
        self.keys.enabled()
    }

    /// The live session the request's cookie names, if any.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let token = login::cookie_token(headers)?;
        let id = self.sessions.find(token, Instant::now())?;
        Some(Session {
            sessions: self.sessions.clone(),
            id,
        })
    }

    /// Whether the request carries `Authorization: Bearer <a key>`.
    fn bearer(&self, headers: &HeaderMap) -> bool {
        self.keys.accepts_bearer(headers)
    }
}

/// The session a logged-in browser's request came with, attached to the
/// request so an answer that lasts (the live stream) can end with it.
#[derive(Debug, Clone)]
pub struct Session {
    sessions: Arc<Sessions>,
    id: SessionId,
}

impl Session {
    /// Not logged out and not expired yet.
    pub fn is_live(&self) -> bool {
        self.sessions.is_live(self.id, Instant::now())
    }
}

/// What a path asks of a visitor.
#[derive(Debug, PartialEq, Eq)]
enum Guard {
    /// The dashboard page: a session, else the login form.
    Page,
    /// Data (`/api/*`, the live stream among them): a session or a bearer key.
    Api,
    /// Health, assets, login and logout, unknown paths: nothing.
    Open,
}

impl Guard {
    fn of(path: &str) -> Self {
        match path {
            "/" => Guard::Page,
            p if p == "/api" || p.starts_with("/api/") => Guard::Api,
            _ => Guard::Open,
        }
    }
}

/// `app` behind the door: with keys, add the login routes and guard the page
/// and `/api/*`; without, `app` as it is.
pub fn protect(app: Router, access: Access) -> Router {
    if !access.enabled() {
        return app;
    }
    let access = Arc::new(access);
    app.merge(login::routes(access.clone()))
        .layer(axum::middleware::from_fn_with_state(access, gate))
}

/// Middleware: let a request through when its path is open or it brings what
/// the path asks for; a session rides along as a request extension.
async fn gate(State(access): State<Arc<Access>>, mut request: Request, next: Next) -> Response {
    let guard = Guard::of(request.uri().path());
    if guard == Guard::Open {
        return next.run(request).await;
    }
    if let Some(session) = access.session(request.headers()) {
        request.extensions_mut().insert(session);
        return next.run(request).await;
    }
    match guard {
        Guard::Api if access.bearer(request.headers()) => next.run(request).await,
        Guard::Api => unauthorized(),
        _ => login::form(StatusCode::UNAUTHORIZED, false),
    }
}

/// 401 in the JSON envelope, with the challenge a script can answer.
fn unauthorized() -> Response {
    let message = "this dashboard needs a key: log in at / or send \
                   Authorization: Bearer <key> (DASHBOARD_KEYS, or the gateway's API_KEYS)";
    let mut response = envelope(StatusCode::UNAUTHORIZED, "unauthorized", message.into());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"jetinfer dashboard\""),
    );
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_the_data_are_guarded_and_nothing_else() {
        assert_eq!(Guard::of("/"), Guard::Page);
        for data in ["/api/snapshot", "/api/stream", "/api", "/api/nope"] {
            assert_eq!(Guard::of(data), Guard::Api, "{data}");
        }
        for open in [
            "/healthz",
            "/style.css",
            "/app.js",
            "/login",
            "/logout",
            "/apix",
        ] {
            assert_eq!(Guard::of(open), Guard::Open, "{open}");
        }
    }

    #[test]
    fn a_bearer_key_is_read_exactly() {
        let access = Access::new(vec!["k3y".parse().unwrap()], Duration::from_secs(60));
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            access.bearer(&headers)
        };
        assert!(with("Bearer k3y"));
        assert!(!with("Bearer k3"));
        assert!(!with("Basic k3y"));
        assert!(!with("k3y"));
        assert!(!access.bearer(&HeaderMap::new()));
    }
}
