//! Admission: API keys guard work but not probes, requests over the in-flight
//! limit are shed with 429, a full work queue answers 503, both with
//! `Retry-After`, and the gateway serves again without a restart.

use super::{get, LIMIT, WAIT};
use crate::stack::{Stack, WORKER};
use jetinfer_testsupport::{wait_for, WorkerProcess};
use serde_json::{json, Value};

/// POST /infer with exactly the key given (the stack's own client may add one).
async fn post(stack: &Stack, key: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/infer", stack.url))
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("gateway reachable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_guard_work_but_not_probes() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(1, &["--api-keys", "key-one,key-two"]).await;
        let body = json!({"task": "echo", "input": "hi"});

        for key in [None, Some("wrong"), Some("key-one-but-longer")] {
            let r = post(&stack, key, body.clone()).await;
            assert_eq!(r.status(), 401, "key {key:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let err: Value = r.json().await.unwrap();
            assert_eq!(err["error"], "unauthorized", "{err}");
            assert!(err["message"].as_str().unwrap().contains("Bearer"), "{err}");
        }
        for key in ["key-one", "key-two"] {
            let r = post(&stack, Some(key), body.clone()).await;
            assert_eq!(r.status(), 200, "{key}");
        }
        for path in ["/status", "/recent_requests"] {
            let url = format!("{}{path}", stack.url);
            assert_eq!(get(&url, None).await.0, 401, "{path} without a key");
            assert_eq!(get(&url, Some("key-two")).await.0, 200, "{path} with a key");
        }
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            let (status, body) = get(&format!("{}{path}", stack.url), None).await;
            assert_eq!(status, 200, "{path} stays open: {body}");
        }
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_in_flight_limit_requests_are_shed_then_served_again() {
    tokio::time::timeout(LIMIT, async {
        let stack =
            Stack::start(0, &["--max-in-flight", "2", "--request-timeout-ms", "4000"]).await;
        let body = json!({"task": "embed", "input": "waiting for a worker"});
        // No worker yet: two requests wait and fill the gateway.
        let waiting: Vec<_> = (0..2)
            .map(|_| tokio::spawn(post_owned(stack.url.clone(), body.clone())))
            .collect();
        wait_for("two requests waiting", WAIT, || async {
            (stack.status().await?["waiting"].as_u64()? == 2).then_some(())
        })
        .await;

        let shed = post(&stack, None, body.clone()).await;
        assert_eq!(shed.status(), 429);
        assert_eq!(shed.headers()["retry-after"], "1");
        let err: Value = shed.json().await.unwrap();
        assert_eq!(err["error"], "overloaded", "{err}");
        assert!(
            err["message"].as_str().unwrap().contains("MAX_IN_FLIGHT"),
            "{err}"
        );

        // The waiting ones still get their one answer (a timeout: no worker).
        for w in waiting {
            assert_eq!(w.await.unwrap(), 504);
        }
        // Recovery without a restart: a worker arrives and requests succeed.
        let _worker = WorkerProcess::start(WORKER, &stack.nats, "late", &[]);
        stack.wait_for_workers(1).await;
        let ok = post(&stack, None, body).await;
        assert_eq!(ok.status(), 200);
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

/// POST /infer from a task of its own (no key); returns the status.
async fn post_owned(url: String, body: Value) -> u16 {
    let r = reqwest::Client::new()
        .post(format!("{url}/infer"))
        .json(&body)
        .send()
        .await
        .expect("gateway reachable");
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_work_queue_answers_503_with_retry_after() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(
            0,
            &[
                "--stream-max-msgs",
                "1",
                "--batch-max-size",
                "1",
                "--request-timeout-ms",
                "4000",
            ],
        )
        .await;
        let body = json!({"task": "embed", "input": "queued"});
        let first = tokio::spawn(post_owned(stack.url.clone(), body.clone()));
        let js = async_nats::jetstream::new(stack.nats.client().await);
        wait_for("the first batch stored", WAIT, || async {
            let mut stream = js.get_stream("INFER_TASKS").await.ok()?;
            (stream.info().await.ok()?.state.messages == 1).then_some(())
        })
        .await;
        let full = post(&stack, None, body).await;
        assert_eq!(full.status(), 503);
        assert_eq!(full.headers()["retry-after"], "1");
        let err: Value = full.json().await.unwrap();
        assert_eq!(err["error"], "unavailable", "{err}");
        assert!(err["request_id"].is_string(), "{err}");
        assert_eq!(first.await.unwrap(), 504);
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
