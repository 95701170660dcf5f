//! A trivial axum `/infer` handler that answers at once: the baseline the
//! pipeline's own overhead (echo task through gateway → NATS → worker) is
//! compared with, and a target for testing loadgen's own counting.

use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Answers every `POST /infer` with 200 and an echo-shaped body, except bodies
/// whose `input` is `"fail"`, which get a 503 like the gateway's.
pub fn app() -> Router {
    Router::new().route(
        "/infer",
        post(|Json(body): Json<Value>| async move {
            if body["input"] == "fail" {
                let err = json!({"error": "unavailable", "message": "asked to fail"});
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(err));
            }
            let answer = json!({"request_id": "trivial", "task": body["task"], "model": "none",
                "worker_id": "trivial", "retries": 0, "latency_ms": 0.0, "output": {"echo": body["input"]}, "cached": false});
            (axum::http::StatusCode::OK, Json(answer))
        }),
    )
}

/// Serve [`app`] on a free loopback port; returns its base URL.
pub async fn spawn() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app()).await });
    Ok(url)
}
