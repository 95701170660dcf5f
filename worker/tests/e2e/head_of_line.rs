//! No head-of-line blocking: while one worker computes a heavy request, small
//! requests go to the idle worker, not into a queue behind the heavy pass.
//!
//! A busy worker keeps no pull request waiting on any consumer, so the only
//! place a small request can go is the other worker. This test checks that
//! property (who answered), not a time limit; the latencies it prints are
//! for the reader.

use crate::stack::Stack;
use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

/// A similarity request at the token budget: a query and 15 candidates,
/// each long enough for the model's 256 tokens.
fn heavy() -> serde_json::Value {
    let text = |i: usize| format!("{i} ") + &"a heavy sentence that goes on and on ".repeat(28);
    json!({
        "task": "similarity",
        "input": {"query": text(0), "candidates": (1..16).map(text).collect::<Vec<_>>()}
    })
}

/// Small requests of every kind a worker serves, high priority among them.
fn small(i: usize) -> serde_json::Value {
    match i % 4 {
        0 => json!({"task": "embed", "input": format!("small request {i}")}),
        1 => json!({"task": "classify", "input": format!("small {i}"), "labels": ["a", "b"]}),
        2 => json!({"task": "embed", "input": format!("urgent {i}"), "priority": "high"}),
        _ => {
            json!({"task": "similarity", "input": {"query": "q", "candidates": [format!("c{i}")]}})
        }
    }
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_requests_go_to_the_idle_worker_while_a_heavy_one_computes() {
    // Who computes each request is under test (the small ones are sent
    // twice): none may be answered from the cache.
    let stack = Stack::start(2, &["--cache-ttl-s", "0"]).await;
    let mut alone = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        let (status, body) = stack.infer(small(i)).await;
        assert_eq!(status, 200, "{body}");
        alone.push(sent.elapsed().as_secs_f64() * 1000.0);
    }

    // Which worker takes the heavy batch, and when it has answered it (its
    // `completed` event goes out before it asks for more work).
    let admin = stack.nats.client().await;
    let mut events = admin.subscribe("infer.event.>").await.unwrap();
    let (busy_tx, busy_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut busy = None;
        let mut busy_tx = Some(busy_tx);
        while let Some(event) = events.next().await {
            let mut parts = event.subject.split('.').skip(2);
            let (Some(worker), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match (kind, &busy) {
                ("started", None) => {
                    busy = Some(worker.to_owned());
                    let _ = busy_tx.take().map(|tx| tx.send(worker.to_owned()));
                }
                ("completed", Some(b)) if b == worker => {
                    let _ = done_tx.send(Instant::now());
                    return;
                }
                _ => {}
            }
        }
    });
    let heavy_call = tokio::spawn({
        let http = stack.http.clone();
        let url = format!("{}/infer", stack.url);
        async move {
            let sent = Instant::now();
            let r = http.post(url).json(&heavy()).send().await.expect("gateway");
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.expect("JSON");
            (status, body, sent.elapsed().as_secs_f64() * 1000.0)
        }
    });
    let busy = tokio::time::timeout(Duration::from_secs(60), busy_rx)
        .await
        .expect("the heavy batch starts")
        .unwrap();

    let mut beside = Vec::new();
    let mut answered = Vec::new();
    let mut i = 0;
    while !heavy_call.is_finished() {
        let sent = Instant::now();
        let (status, body) = stack.infer(small(i)).await;
        assert_eq!(status, 200, "{body}");
        beside.push(sent.elapsed().as_secs_f64() * 1000.0);
        answered.push((i, sent, body["worker_id"].as_str().unwrap().to_owned()));
        i += 1;
    }
    let (status, body, heavy_ms) = heavy_call.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["worker_id"], busy.as_str());
    let done = done_rx.await.expect("the heavy batch's completed event");

    let (p50, p99) = percentiles(alone);
    let (b50, b99) = percentiles(beside);
    println!(
        "small requests alone: p50 {p50:.1} ms p99 {p99:.1} ms; beside a {heavy_ms:.0} ms heavy one: \
         p50 {b50:.1} ms p99 {b99:.1} ms over {i} requests"
    );
    // Sent while the busy worker was still computing (with a margin for its
    // `completed` event to reach us), a small request must not be its.
    let before_done: Vec<_> = answered
        .iter()
        .filter(|(_, sent, _)| *sent + Duration::from_millis(5) < done)
        .collect();
    assert!(
        !before_done.is_empty(),
        "the heavy request ended before any small one was sent"
    );
    let stuck: Vec<_> = before_done.iter().filter(|(_, _, w)| *w == busy).collect();
    assert!(
        stuck.is_empty(),
        "small requests waited behind the heavy pass on {busy}: {stuck:?}"
    );
    stack.shutdown().await;
}
