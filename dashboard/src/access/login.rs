//! The login form, `POST /login`, `POST /logout`, and the session cookie.
//!
//! The cookie is `HttpOnly` (page scripts cannot read it, so an injected
//! script cannot carry it off) and `SameSite=Strict` (another site's page
//! cannot make the browser send it, so no cross-site request reads data or
//! logs anyone out). It is not `Secure`: the dashboard serves plain HTTP, and
//! a `Secure` cookie would never come back over it.

use super::Access;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::Router;
use std::sync::Arc;
use std::time::Instant;

/// The session cookie's name.
const COOKIE: &str = "jetinfer_session";

/// The log-out control, placed in the dashboard's header when a session
/// opened the page.
pub const LOGOUT_BUTTON: &str = r#"<form method="post" action="/logout" class="logout"><button type="submit">log out</button></form>"#;

/// Said after a refused key: the same words whatever was wrong with it.
const REFUSED: &str = r#"<p class="error" id="login-refused">That key was not accepted.</p>"#;

/// What the login form posts.
#[derive(serde::Deserialize)]
struct Login {
    key: String,
}

/// `/login` and `/logout`. A `GET /login` (a reload after a refused key)
/// goes back to the page.
pub(super) fn routes(access: Arc<Access>) -> Router {
    Router::new()
        .route("/login", post(login).get(|| async { Redirect::to("/") }))
        .route("/logout", post(logout))
        .with_state(access)
}

/// The login form with `status`; `refused` adds that the key was not accepted.
pub(super) fn form(status: StatusCode, refused: bool) -> Response {
    let page = include_str!("../../assets/login.html");
    let page = page.replace("<!--refused-->", if refused { REFUSED } else { "" });
    (status, [(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

/// A known key opens a session and goes to the page; anything else (a wrong
/// key, no key, not a form) gets the form again with 401, saying only that
/// the key was not accepted.
async fn login(
    State(access): State<Arc<Access>>,
    posted: Result<Form<Login>, FormRejection>,
) -> Response {
    if !posted.is_ok_and(|Form(login)| access.keys.accepts(&login.key)) {
        tracing::warn!("dashboard login refused: not a known key");
        return form(StatusCode::UNAUTHORIZED, true);
    }
    let token = access.sessions.open(Instant::now());
    let max_age = access.sessions.ttl().as_secs();
    let cookie = format!("{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// End the cookie's session here and in the browser, then show the form.
async fn logout(State(access): State<Arc<Access>>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie_token(&headers) {
        access.sessions.close(token);
    }
    let cookie = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// The session token in the request's `Cookie` headers, if one is there.
pub(super) fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, token)| token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_found_among_other_cookies() {
        let mut headers = HeaderMap::new();
        assert_eq!(cookie_token(&headers), None);
        headers.append(
            header::COOKIE,
            "theme=dark; jetinfer_sessionx=no".parse().unwrap(),
        );
        assert_eq!(cookie_token(&headers), None);
        headers.append(
            header::COOKIE,
            "a=1;jetinfer_session=abc ; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_token(&headers), Some("abc"));
    }
}
