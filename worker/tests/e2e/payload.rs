//! No message the server would refuse: against a nats-server whose
//! `max_payload` is only 64 KiB, large requests are batched and answered in
//! messages that fit, a request that cannot fit is refused at the door, and
//! an answer too large to travel fails only its own request, at once.

use crate::stack::{Setup, Stack};
use serde_json::{json, Value};
use std::time::Duration;

const MAX_PAYLOAD: usize = 64 * 1024;
const LIMIT: Duration = Duration::from_secs(180);

/// A similarity request of `n` candidates of `chars` characters each. One
/// long word is one `[UNK]` token, so the bytes are large and the compute small.
fn similarity(tag: usize, n: usize, chars: usize) -> Value {
    let candidates: Vec<String> = (0..n)
        .map(|i| format!("{tag}{i}{}", "x".repeat(chars)))
        .collect();
    json!({"task": "similarity", "input": {"query": "q", "candidates": candidates}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_fits_the_servers_max_payload() {
    tokio::time::timeout(LIMIT, async {
        let setup = Setup {
            max_payload: Some(MAX_PAYLOAD),
            ..Setup::default()
        };
        // The token budget would refuse the 256-candidate request before its
        // answer is ever computed; this test is about sizes, so lift it.
        let stack = Stack::start_with(2, &["--max-request-tokens", "100000"], setup).await;

        // 30 requests of ~24 KB at once: at most two fit in one task message,
        // and their answers are as large.
        let calls = (0..30).map(|i| stack.infer(similarity(i, 4, 6000)));
        let answers = futures::future::join_all(calls).await;
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["output"]["scores"].as_array().map(Vec::len), Some(4));
        }

        // One request that no task message could carry: refused before queueing.
        let (status, body) = stack.infer(similarity(99, 11, 6000)).await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["error"], "payload_too_large", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("max_payload"),
            "{body}"
        );

        // It fits as a request, but its answer (which echoes every candidate
        // with its score) cannot: only this request fails, at once, with a 4xx.
        let (status, body) = stack.infer(similarity(98, 256, 240)).await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["error"], "result_too_large", "{body}");
        assert!(body["request_id"].is_string(), "{body}");

        let (status, body) = stack.infer(json!({"task": "embed", "input": "fine"})).await;
        assert_eq!(status, 200, "{body}");
        let log = stack.nats.log();
        assert!(!log.contains("Maximum Payload"), "{log}");
        assert!(!log.to_lowercase().contains("maximum payload"), "{log}");
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
