//! Right answers or clear refusals, and every error in our JSON envelope:
//! unknown routes, wrong methods and media types on the gateway and the
//! dashboard; duplicate labels, invisible texts and similarity scores.

use crate::stack::Stack;
use jetinfer_dashboard::server;
use jetinfer_dashboard::watch::Watch;
use serde_json::{json, Value};
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

/// `method path` on `base`: status, `Allow` header, JSON body.
async fn call(http: &reqwest::Client, method: &str, url: String) -> (u16, Option<String>, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let r = http.request(method, url).send().await.expect("reachable");
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, allow, body)
}

/// Unknown paths and wrong methods answer with the envelope (and `Allow`).
async fn assert_envelopes(http: &reqwest::Client, base: &str, known: &str, allowed: &str) {
    let (status, _, body) = call(http, "GET", format!("{base}/no/such/route")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("/no/such/route"));
    let (status, allow, body) = call(http, "DELETE", format!("{base}{known}")).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    assert!(
        allow.unwrap_or_default().contains(allowed),
        "Allow lists {allowed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_is_the_json_envelope_on_the_gateway_and_the_dashboard() {
    let stack = Stack::start(1, &[]).await;
    assert_envelopes(&stack.http, &stack.url, "/infer", "POST").await;
    let (status, allow, body) = call(&stack.http, "GET", format!("{}/infer", stack.url)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert_eq!(allow.as_deref(), Some("POST"));

    // The dashboard's routes on a watch of the test's stack.
    let stop = tokio_util::sync::CancellationToken::new();
    let watch = Watch::start(
        stack.nats.client().await,
        10,
        Duration::from_secs(5),
        stop.clone(),
    );
    let pages = Arc::new(server::AppState {
        watch,
        stop: stop.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dashboard_url = format!("http://{}", listener.local_addr().unwrap());
    let dashboard = tokio::spawn(axum::serve(listener, server::app(pages)).into_future());
    assert_envelopes(&stack.http, &dashboard_url, "/api/snapshot", "GET").await;
    dashboard.abort();
    stop.cancel();
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_types_are_read_as_the_rfc_says() {
    let stack = Stack::start(1, &[]).await;
    let body = json!({"task": "echo", "input": "hi"})
        .to_string()
        .into_bytes();
    for json in [
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        "application/vnd.x+json",
    ] {
        let (status, answer) = stack.infer_raw(body.clone(), json).await;
        assert_eq!(status, 200, "{json}: {answer}");
    }
    for other in ["application/jsonx", "text/plain"] {
        let (status, answer) = stack.infer_raw(body.clone(), other).await;
        assert_eq!(status, 415, "{other}: {answer}");
        assert_eq!(answer["error"], "unsupported_media_type");
    }
    let status = stack.status().await.unwrap();
    assert_eq!(
        status["gateway"]["rejected"], 2,
        "a refused media type is counted"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn right_answers_or_clear_refusals() {
    let stack = Stack::start(1, &[]).await;
    let refused = [
        (
            json!({"task": "classify", "input": "x", "labels": ["good", "good"]}),
            "\"good\"",
        ),
        (
            json!({"task": "embed", "input": "\u{200b}"}),
            "`input` must not be empty",
        ),
        (
            json!({"task": "classify", "input": "\0", "labels": ["a", "b"]}),
            "`input` must not be empty",
        ),
        (
            json!({"task": "embed", "input": "\u{ad}\u{301}"}),
            "`input` must not be empty",
        ),
        (
            json!({"task": "similarity", "input": {"query": "q", "candidates": ["a"], "k": 1}}),
            "unknown field `input.k`; allowed: query, candidates",
        ),
    ];
    for (body, says) in refused {
        let (status, answer) = stack.infer(body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let text = "the same sentence, compared with itself";
    let (status, answer) = stack
        .infer(json!({"task": "similarity", "input": {"query": text, "candidates": [text]}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let score = answer["output"]["scores"][0]["score"].as_f64().unwrap();
    assert!(
        (-1.0..=1.0).contains(&score),
        "score {score} within [-1, 1]"
    );
    assert!(score > 0.999, "a text is most similar to itself: {score}");
    stack.shutdown().await;
}
