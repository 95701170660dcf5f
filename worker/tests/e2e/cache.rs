//! The answer cache through the stack: an identical request is answered
//! without the queue (`"cached": true`, no worker computes it), anything
//! else is computed, and `CACHE_TTL_S=0` turns it off.

use crate::stack::Stack;
use serde_json::{json, Value};

/// Requests the workers computed, from their heartbeats in `/status`.
async fn computed(stack: &Stack) -> u64 {
    let status = stack.status().await.expect("status");
    (status["workers"].as_array().unwrap().iter())
        .map(|w| w["processed"].as_u64().unwrap())
        .sum()
}

async fn ask(stack: &Stack, body: Value) -> Value {
    let (status, answer) = stack.infer(body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_identical_request_is_answered_from_the_cache() {
    let stack = Stack::start(1, &[]).await;
    let body = json!({"task": "embed", "input": "the same sentence twice"});
    let first = ask(&stack, body.clone()).await;
    assert_eq!(first["cached"], false, "{first}");
    // The heartbeat carries the count a second later at most.
    let settled = || async {
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        computed(&stack).await
    };
    let before = settled().await;
    let again = ask(
        &stack,
        json!({"task": "embed", "input": "the same sentence twice", "priority": "high"}),
    )
    .await;
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["output"], first["output"]);
    assert_eq!(again["worker_id"], first["worker_id"]);
    assert_ne!(again["request_id"], first["request_id"]);
    let other = ask(
        &stack,
        json!({"task": "embed", "input": "another sentence"}),
    )
    .await;
    assert_eq!(other["cached"], false, "{other}");
    let echo = json!({"task": "echo", "input": "pipeline"});
    ask(&stack, echo.clone()).await;
    assert_eq!(
        ask(&stack, echo).await["cached"],
        false,
        "echo is never cached"
    );
    assert_eq!(
        settled().await,
        before + 3,
        "the cached request was not computed"
    );
    let metrics = stack.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"jetinfer_gateway_cache_total{outcome="hit"} 1"#),
        "{metrics}"
    );
    stack.shutdown().await;

    let off = Stack::start(1, &["--cache-ttl-s", "0"]).await;
    ask(&off, body.clone()).await;
    assert_eq!(ask(&off, body).await["cached"], false);
    off.shutdown().await;
}
