//! End to end: REST → JetStream → three real workers → answers.

use crate::stack::Stack;
use serde_json::json;
use std::collections::{HashMap, HashSet};

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embed_returns_the_reference_embedding_alone_and_batched() {
    let stack = Stack::start(1, &[]).await;
    let example = json!({"task": "embed", "input": "This is an example sentence"});
    let (status, body) = stack.infer(example.clone()).await;
    assert_eq!(status, 200, "{body}");
    for field in [
        "request_id",
        "task",
        "model",
        "worker_id",
        "retries",
        "latency_ms",
    ] {
        assert!(body.get(field).is_some(), "missing {field}: {body}");
    }
    assert_eq!(body["retries"], 0);
    let alone = floats(&body["output"]["embedding"]);
    assert_eq!(alone.len(), 384);
    for (got, want) in alone.iter().zip([0.0677, 0.0634, 0.0488, 0.0795, 0.0374]) {
        assert!((got - want).abs() <= 1e-3, "{:?}", &alone[..5]);
    }

    // Concurrently with longer texts, so the example is padded in a batch.
    let long = "A considerably longer sentence, so that the example sentence is padded when both share a batch.";
    let mut calls = Vec::new();
    for i in 0..24 {
        let body = if i % 2 == 0 {
            example.clone()
        } else {
            json!({"task": "embed", "input": long})
        };
        let stack = &stack;
        calls.push(async move { stack.infer(body).await });
    }
    let answers = futures::future::join_all(calls).await;
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{body}");
        if i % 2 == 0 {
            let e = floats(&body["output"]["embedding"]);
            let cos: f32 = e.iter().zip(&alone).map(|(a, b)| a * b).sum();
            assert!(cos >= 0.9999, "cosine {cos}");
        }
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn similarity_and_classify_give_sensible_answers() {
    let stack = Stack::start(1, &[]).await;
    let (status, body) = stack
        .infer(json!({"task": "similarity", "input": {
            "query": "A man is eating food.",
            "candidates": ["The girl is playing guitar.", "A man is eating pasta.", "A cheetah runs."]
        }}))
        .await;
    assert_eq!(status, 200, "{body}");
    let scores = body["output"]["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 3);
    assert_eq!(scores[0]["index"], 1);
    assert_eq!(scores[0]["text"], "A man is eating pasta.");
    let s: Vec<f64> = scores
        .iter()
        .map(|s| s["score"].as_f64().unwrap())
        .collect();
    assert!(s.windows(2).all(|w| w[0] >= w[1]), "not sorted: {s:?}");

    for (text, want) in [("I love this", "positive"), ("I hate this", "negative")] {
        let (status, body) = stack
            .infer(json!({"task": "classify", "input": text}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["output"]["label"], want, "{text}: {body}");
        let total: f64 = body["output"]["scores"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-4);
    }
    let (status, body) = stack
        .infer(
            json!({"task": "classify", "input": "The match ended two to one after extra time",
                      "labels": ["sports", "cooking", "finance"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["label"], "sports", "{body}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_requests_through_three_workers() {
    let stack = Stack::start(3, &["--batch-max-size", "8"]).await;
    let calls = (0..300).map(|i| {
        let stack = &stack;
        async move {
            let body = json!({"task": "embed", "input": format!("request number {i} about topic {}", i % 17)});
            stack.infer(body).await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut ids = HashSet::new();
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(
            ids.insert(body["request_id"].as_str().unwrap().to_owned()),
            "answered twice"
        );
        *per_worker
            .entry(body["worker_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(ids.len(), 300);
    assert_eq!(
        per_worker.len(),
        3,
        "every worker serves some: {per_worker:?}"
    );

    let status = stack.status().await.unwrap();
    assert_eq!(status["gateway"]["submitted"], 300);
    assert_eq!(status["gateway"]["completed"], 300);
    assert_eq!(status["gateway"]["failed"], 0);
    let processed: u64 = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["processed"].as_u64().unwrap())
        .sum();
    // Heartbeats lag by up to one interval; they never over-count.
    assert!(processed <= 300, "{status}");

    let recent: serde_json::Value = stack
        .http
        .get(format!("{}/recent_requests?limit=5", stack.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recent = recent.as_array().expect("a list");
    assert_eq!(recent.len(), 5);
    for r in recent {
        assert_eq!(r["outcome"], "ok");
        assert!(ids.contains(r["request_id"].as_str().unwrap()));
        // Private by default: the text's length and a fingerprint, no text.
        assert!(r.get("input").is_none(), "{r}");
        assert!(r["input_chars"].as_u64().unwrap() > "request number ".len() as u64);
        assert_eq!(r["input_hash"].as_str().unwrap().len(), 12, "{r}");
    }
    let bad = stack
        .http
        .get(format!("{}/recent_requests?limit=many", stack.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    stack.shutdown().await;
}
