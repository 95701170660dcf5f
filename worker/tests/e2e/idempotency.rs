//! Safe retries with `Idempotency-Key`: the same key gets the same answer and
//! the model runs once, also when the retry comes while the first request
//! computes, and when the gateway that took it was killed (`kill -9`) and a
//! new one answers the retry. "Computed once" is read from the workers'
//! `processed` counters in their heartbeats.

use crate::stack::{gateway_bin, slow_workers, Stack};
use futures::StreamExt;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{
    self, body_hash, kv_key, IdempotencyEntry, KeyState, Priority, TaskInput,
};
use jetinfer_shared::subjects;
use jetinfer_testsupport::{wait_for, GatewayProcess, NatsServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Whole-test bound.
const LIMIT: Duration = Duration::from_secs(180);

/// One answer of `POST /infer`: status, whether it was a replay, the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

/// `POST {url}/infer` with `body` and, if given, the `Idempotency-Key`.
async fn send(url: &str, key: Option<&str>, body: &Value) -> Result<Answer, reqwest::Error> {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/infer"))
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let replayed = match response.headers().get("idempotent-replayed") {
        None => false,
        Some(v) => {
            assert_eq!(v, "true", "the replay header says true or is absent");
            true
        }
    };
    let body = response.json().await?;
    Ok(Answer {
        status,
        replayed,
        body,
    })
}

fn embed(text: &str) -> Value {
    json!({"task": "embed", "input": text})
}

/// An answer of `embed`: 200 with 384 numbers.
fn assert_embedding(answer: &Answer) {
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let vector = answer.body["output"]["embedding"].as_array();
    assert_eq!(vector.map(Vec::len), Some(384), "{:?}", answer.body);
}

/// Requests computed by all workers, from heartbeats written after every
/// computation the test waits for was answered: each live worker's
/// heartbeat is read once it is newer than this call.
async fn processed(nats: &NatsServer) -> u64 {
    let js = async_nats::jetstream::new(nats.client().await);
    let since = now_ms();
    wait_for(
        "heartbeats newer than the answers",
        Duration::from_secs(10),
        || async {
            let beats = jetinfer_shared::heartbeats::live(&js).await.ok()?;
            let fresh = !beats.is_empty() && beats.iter().all(|b| b.updated_at_ms > since);
            fresh.then(|| beats.iter().map(|b| b.processed).sum())
        },
    )
    .await
}

/// The bucket the gateway keeps keyed requests in, opened as admin.
async fn bucket(nats: &NatsServer) -> async_nats::jetstream::kv::Store {
    let js = async_nats::jetstream::new(nats.client().await);
    js.get_key_value(subjects::IDEMPOTENCY_BUCKET)
        .await
        .expect("the gateway created the idempotency bucket")
}

/// What the bucket holds under an anonymous client's `key`.
async fn entry(kv: &async_nats::jetstream::kv::Store, key: &str) -> Option<IdempotencyEntry> {
    let value = kv.get(kv_key("", key)).await.ok()??;
    protocol::decode(&value).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_key_twice_computes_once_and_replays_the_first_answer() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(1, &[]).await;
        let before = processed(&stack.nats).await;
        let body = embed("the same order, sent twice");
        let first = send(&stack.url, Some("order-1"), &body).await.unwrap();
        let second = send(&stack.url, Some("order-1"), &body).await.unwrap();
        assert_embedding(&first);
        assert!(!first.replayed, "the first answer is computed");
        assert!(second.replayed, "the second one is the stored answer");
        assert_eq!(second.status, first.status);
        assert_eq!(
            second.body, first.body,
            "the very same body, latency included"
        );
        let after = processed(&stack.nats).await;
        println!("same key twice: computed {}", after - before);
        assert_eq!(after - before, 1, "the model ran once");

        // Without a key, the same body is an identical request: answered
        // from the answer cache, not replayed and not computed again.
        let unkeyed = send(&stack.url, None, &body).await.unwrap();
        assert_embedding(&unkeyed);
        assert!(!unkeyed.replayed);
        assert_eq!(unkeyed.body["cached"], true, "{}", unkeyed.body);
        assert_ne!(unkeyed.body["request_id"], first.body["request_id"]);
        assert_eq!(processed(&stack.nats).await - before, 1);
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_key_with_another_body_is_refused_with_422() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(1, &[]).await;
        let before = processed(&stack.nats).await;
        let first = send(&stack.url, Some("order-2"), &embed("one body"))
            .await
            .unwrap();
        assert_embedding(&first);
        for other in [
            embed("another body"),
            json!({"task": "embed", "input": "one body", "priority": "high"}),
            json!({"task": "echo", "input": "one body"}),
        ] {
            let reused = send(&stack.url, Some("order-2"), &other).await.unwrap();
            assert_eq!(reused.status, 422, "{:?}", reused.body);
            assert_eq!(reused.body["error"], "idempotency_key_reused");
            assert!(reused.body["message"].is_string());
            assert!(!reused.replayed);
        }
        // Spelling the same request differently is not another body.
        let respelled = json!({"input": "one body", "priority": "normal", "task": "embed"});
        let again = send(&stack.url, Some("order-2"), &respelled).await.unwrap();
        assert!(again.replayed);
        assert_eq!(again.body, first.body);
        assert_eq!(processed(&stack.nats).await - before, 1);
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_while_the_first_computes_waits_for_its_answer() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &[]).await;
        let _slow = slow_workers(&stack.nats, &["slow"], "3000");
        stack.wait_for_workers(1).await;
        let mut started = stack
            .nats
            .client()
            .await
            .subscribe("infer.event.slow.started")
            .await
            .unwrap();
        let before = processed(&stack.nats).await;
        let body = embed("a slow order");
        let url = stack.url.clone();
        let first = tokio::spawn({
            let body = body.clone();
            async move { send(&url, Some("order-3"), &body).await.unwrap() }
        });
        started
            .next()
            .await
            .expect("the worker starts the first request");
        let retried_at = Instant::now();
        let retry = send(&stack.url, Some("order-3"), &body).await.unwrap();
        let waited = retried_at.elapsed();
        let first = first.await.unwrap();
        assert_embedding(&first);
        assert!(!first.replayed);
        assert_embedding(&retry);
        assert!(retry.replayed, "the retry got the first request's answer");
        assert!(
            waited > Duration::from_millis(1000),
            "it waited for it: {waited:?}"
        );
        // The retry heard of the answer from the worker, which knows no
        // gateway latency; everything else is the first answer's.
        for field in ["request_id", "worker_id", "model", "retries", "output"] {
            assert_eq!(retry.body[field], first.body[field], "{field}");
        }
        let computed = processed(&stack.nats).await - before;
        println!("retry while computing: waited {waited:?}, computed {computed}");
        assert_eq!(computed, 1, "the model ran once");
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_nobody_will_answer_is_taken_over() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(1, &[]).await;
        let kv = bucket(&stack.nats).await;
        let before = processed(&stack.nats).await;
        // Claims left by a gateway that died: one before it published its
        // batch (past the grace), one whose batch is no longer in the stream.
        let orphans = [
            ("orphan-unpublished", 10_000, None),
            ("orphan-lost", 0, Some(999_999)),
        ];
        for (key, age_ms, published) in orphans {
            let text = format!("text of {key}");
            let claim = IdempotencyEntry {
                body_hash: body_hash(&TaskInput::Embed { text }, Priority::Normal, None),
                request_id: uuid::Uuid::new_v4(),
                state: KeyState::Pending {
                    gateway_id: "gw-dead".into(),
                    since_ms: now_ms() - age_ms,
                    published,
                },
            };
            let value = protocol::encode(&claim).unwrap();
            kv.put(kv_key("", key), value.into()).await.unwrap();
        }
        for (key, ..) in orphans {
            let body = embed(&format!("text of {key}"));
            let answer = send(&stack.url, Some(key), &body).await.unwrap();
            assert_embedding(&answer);
            assert!(!answer.replayed, "{key}: computed, not replayed");
            let stored = entry(&kv, key).await.expect("an entry");
            assert_eq!(stored.request_id.to_string(), answer.body["request_id"]);
            assert!(
                matches!(stored.state, KeyState::Done(_)),
                "{key}: {stored:?}"
            );
        }
        assert_eq!(processed(&stack.nats).await - before, 2);
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_requests_are_answered_once_after_a_kill_9_of_their_gateway() {
    const N: usize = 8;
    tokio::time::timeout(LIMIT, async {
        let gateway_bin = gateway_bin();
        let nats = NatsServer::start();
        let env = [("REQUEST_TIMEOUT_MS", "60000"), ("BATCH_MAX_SIZE", "2")];
        let mut first = GatewayProcess::start(&gateway_bin, &nats, "gw-idem", &env).await;
        let _workers = slow_workers(&nats, &["slow-a", "slow-b"], "2000");
        let kv = bucket(&nats).await;
        wait_for("two heartbeats", Duration::from_secs(60), || async {
            let js = async_nats::jetstream::new(nats.client().await);
            let beats = jetinfer_shared::heartbeats::live(&js).await.ok()?;
            (beats.len() == 2).then_some(())
        })
        .await;
        let before = processed(&nats).await;

        let keys: Vec<String> = (0..N).map(|i| format!("kill-{i}")).collect();
        let body = |i: usize| embed(&format!("keyed request {i} across a gateway kill"));
        let url = first.url().to_owned();
        let in_flight: Vec<_> = (0..N)
            .map(|i| {
                let (url, key, body) = (url.clone(), keys[i].clone(), body(i));
                tokio::spawn(async move { send(&url, Some(&key), &body).await })
            })
            .collect();
        // Every request's batch is stored in the work queue: nothing is left
        // to the dying gateway but its waiting clients.
        let pending = wait_for("every claim published", Duration::from_secs(30), || async {
            let mut pending = 0;
            for key in &keys {
                match entry(&kv, key).await?.state {
                    KeyState::Pending { published, .. } => {
                        published?;
                        pending += 1;
                    }
                    KeyState::Done(_) => {}
                }
            }
            Some(pending)
        })
        .await;
        first.kill();
        let mut lost = 0;
        for call in in_flight {
            match call.await.unwrap() {
                Err(_) => lost += 1,
                Ok(answer) => assert_embedding(&answer), // answered before the kill
            }
        }
        assert!(pending >= 1, "requests were in flight at the kill");

        let second = GatewayProcess::start(&gateway_bin, &nats, "gw-idem", &env).await;
        let retries = (0..N).map(|i| {
            let (url, key, body) = (second.url(), &keys[i], body(i));
            async move { send(url, Some(key), &body).await.unwrap() }
        });
        let answers = futures::future::join_all(retries).await;
        for (key, answer) in keys.iter().zip(&answers) {
            assert_embedding(answer);
            assert!(
                answer.replayed,
                "{key}: the stored answer, not a second run"
            );
            let stored = entry(&kv, key).await.expect("an entry");
            assert_eq!(
                stored.request_id.to_string(),
                answer.body["request_id"],
                "{key}"
            );
        }
        let computed = processed(&nats).await - before;
        println!(
            "kill -9 of the gateway: {N} keyed requests, {pending} computing at the kill \
             ({lost} connections lost), {} retries answered 200, {computed} computed",
            answers.len()
        );
        assert_eq!(computed, N as u64, "each key computed exactly once");
        drop(second);
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_idempotency_key_is_refused_with_400() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &[]).await;
        let body = embed("never computed");
        let long = "k".repeat(256);
        for bad in ["", "two words", "tab\there", long.as_str()] {
            let answer = send(&stack.url, Some(bad), &body).await.unwrap();
            assert_eq!(answer.status, 400, "{bad:?}: {:?}", answer.body);
            assert_eq!(answer.body["error"], "invalid_idempotency_key", "{bad:?}");
        }
        let client = reqwest::Client::new();
        let raw = |value: reqwest::header::HeaderValue| {
            client
                .post(format!("{}/infer", stack.url))
                .header("Idempotency-Key", value)
                .json(&body)
                .send()
        };
        let latin1 = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap();
        let twice = client
            .post(format!("{}/infer", stack.url))
            .header("Idempotency-Key", "a")
            .header("Idempotency-Key", "b")
            .json(&body)
            .send();
        for response in [raw(latin1).await.unwrap(), twice.await.unwrap()] {
            assert_eq!(response.status(), 400);
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"], "invalid_idempotency_key");
        }
        // The header is checked before the body, and nothing was queued.
        let both = send(&stack.url, Some("a b"), &json!({"task": "dance"}))
            .await
            .unwrap();
        assert_eq!(both.body["error"], "invalid_idempotency_key");
        assert_eq!(stack.status().await.unwrap()["gateway"]["submitted"], 0);
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
