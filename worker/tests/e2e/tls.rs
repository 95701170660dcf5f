//! The whole pipeline over TLS: nats-server accepts TLS only, with a
//! certificate from a private CA (as `./jetinfer up --tls` makes one); the
//! workers and the gateway verify it with `NATS_TLS_CA` and every task and
//! answer crosses TLS. A client without the CA gets nothing.

use crate::stack::{Setup, Stack};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_task_is_answered_over_tls_and_plain_clients_are_refused() {
    let setup = Setup {
        tls: true,
        ..Setup::default()
    };
    let stack = Stack::start_with(1, &[], setup).await;
    for request in [
        json!({"task": "embed", "input": "over tls"}),
        json!({"task": "similarity", "input": {"query": "a cat", "candidates": ["a kitten", "a truck"]}}),
        json!({"task": "classify", "input": "I love it", "labels": ["positive", "negative"]}),
    ] {
        let (status, body) = stack.infer(request.clone()).await;
        assert_eq!(status, 200, "{request} over TLS: {body}");
    }
    let (status, body) = stack
        .infer(json!({"task": "embed", "input": "over tls"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["output"]["embedding"].as_array().map(Vec::len),
        Some(384)
    );

    // The right password without TLS (or without our CA) is not enough.
    let plain = async_nats::ConnectOptions::with_user_and_password(
        "admin".into(),
        stack.nats.password("admin"),
    )
    .connection_timeout(Duration::from_secs(3))
    .connect(stack.nats.url())
    .await;
    assert!(
        plain.is_err(),
        "a client that does not trust our CA must be refused"
    );
    assert!(
        stack.nats.connect_as("admin").await.is_ok(),
        "with the CA it logs in"
    );
}
