//! The page, its assets, the JSON snapshot and the Server-Sent Events stream.
//! Who may see them is [`crate::access`]'s business, layered on top.

use crate::access::{Session, LOGOUT_BUTTON};
use crate::state::Snapshot;
use crate::watch::Watch;
use axum::extract::{Extension, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Shared by the handlers.
pub struct AppState {
    /// What the feeds have seen.
    pub watch: Watch,
    /// The dashboard's stop: it ends every live stream, which would otherwise
    /// run as long as its page is open and hold the graceful shutdown (and
    /// `docker compose stop`) until it is killed.
    pub stop: CancellationToken,
}

impl AppState {
    fn snapshot(&self) -> Snapshot {
        self.watch.snapshot()
    }
}

/// The dashboard's routes.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript")],
                    include_str!("../assets/app.js"),
                )
            }),
        )
        .route(
            "/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css")],
                    include_str!("../assets/style.css"),
                )
            }),
        )
        .route("/api/snapshot", get(snapshot))
        .route("/api/stream", get(stream))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// An error in the gateway's JSON envelope, `{"error": code, "message": ...}`,
/// so every client of the stack reads one shape.
pub(crate) fn envelope(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({"error": code, "message": message});
    (status, Json(body)).into_response()
}

async fn not_found(uri: Uri) -> Response {
    let message = format!("no route {}", uri.path());
    envelope(StatusCode::NOT_FOUND, "not_found", message)
}

/// axum adds the `Allow` header.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!(
        "{method} is not allowed on {}; see the Allow header",
        uri.path()
    );
    envelope(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    )
}

/// The dashboard, with a log-out button when a login opened it.
async fn page(session: Option<Extension<Session>>) -> Html<String> {
    let page = include_str!("../assets/index.html");
    let logout = if session.is_some() { LOGOUT_BUTTON } else { "" };
    Html(page.replace("<!--logout-->", logout))
}

async fn snapshot(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    Json(state.snapshot())
}

/// One snapshot per second, for as long as the page is open, the dashboard
/// runs and, when a login opened it, its session lasts: a logout or an expiry
/// ends the stream, and the browser's reconnect then meets the door.
async fn stream(
    State(state): State<Arc<AppState>>,
    session: Option<Extension<Session>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = tokio_stream_interval(Duration::from_secs(1))
        .take_while(move |()| futures::future::ready(session.as_ref().is_none_or(|s| s.is_live())))
        .take_until(state.stop.clone().cancelled_owned());
    let events = ticks.map(move |()| {
        let event = Event::default()
            .event("snapshot")
            .json_data(state.snapshot())
            .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
        Ok(event)
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// A stream that yields at once and then every `period`.
fn tokio_stream_interval(period: Duration) -> impl Stream<Item = ()> {
    futures::stream::unfold(tokio::time::interval(period), |mut tick| async move {
        tick.tick().await;
        Some(((), tick))
    })
}
