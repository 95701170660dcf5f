//! Observability: Prometheus metrics on gateway and worker count requests,
//! batches, faults and merged forward passes; workers answer NATS micro
//! service discovery (`$SRV.INFO`, `$SRV.STATS`) and their status endpoint.

use super::{get, LIMIT, WAIT};
use crate::stack::{free_port, Stack, WORKER};
use futures::StreamExt;
use jetinfer_testsupport::{wait_for, WorkerProcess};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// The sum of the samples of `metric` whose labels contain `labels`; None if none.
fn sample(page: &str, metric: &str, labels: &str) -> Option<f64> {
    let values: Vec<f64> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(metric) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_requests_batches_and_faults() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &[]).await;
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let worker = WorkerProcess::start(
            WORKER,
            &stack.nats,
            "measured",
            &[
                ("METRICS_LISTEN", listen.as_str()),
                ("DELAY_MIN_MS", "1"),
                ("DELAY_MAX_MS", "2"),
            ],
        );
        stack.wait_for_workers(1).await;
        for i in 0..5 {
            let (status, body) = stack
                .infer(json!({"task": "embed", "input": format!("sentence {i}")}))
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, _) = stack.infer(json!({"task": "nope", "input": "x"})).await;
        assert_eq!(status, 422);

        // In-process gateways of other tests share this process's recorder,
        // so gateway counts are lower bounds; the worker process's are exact.
        let (status, gateway) = get(&format!("{}/metrics", stack.url), None).await;
        assert_eq!(status, 200);
        let ok = r#"task="embed",outcome="ok""#;
        let at_least = |metric: &str, labels: &str, n: f64| {
            let got = sample(&gateway, metric, labels).unwrap_or(0.0);
            assert!(got >= n, "{metric}{{{labels}}} = {got} < {n}:\n{gateway}");
        };
        at_least("jetinfer_gateway_requests_total", ok, 5.0);
        at_least("jetinfer_gateway_request_duration_seconds_count", ok, 5.0);
        at_least("jetinfer_gateway_batch_size_count", r#"task="embed""#, 1.0);
        at_least(
            "jetinfer_gateway_refused_total",
            r#"code="unknown_task""#,
            1.0,
        );
        assert!(
            sample(&gateway, "jetinfer_queue_pending_batches", "").is_some(),
            "{gateway}"
        );
        assert!(
            sample(&gateway, "jetinfer_gateway_in_flight_requests", "").is_some(),
            "{gateway}"
        );

        let (status, page) = get(&format!("http://{listen}/metrics"), None).await;
        assert_eq!(status, 200, "{}", worker.log());
        let done = r#"outcome="ok""#;
        let requests = sample(&page, "jetinfer_worker_requests_total", done).unwrap_or(0.0);
        assert_eq!(requests, 5.0, "{page}");
        assert!(
            sample(
                &page,
                "jetinfer_worker_batch_compute_seconds_count",
                r#"task="embed""#
            )
            .is_some_and(|n| n >= 1.0),
            "{page}"
        );
        let delays = sample(
            &page,
            "jetinfer_worker_faults_injected_total",
            r#"fault="delay""#,
        );
        assert!(delays.unwrap_or(0.0) >= 1.0, "{page}");
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_answer_nats_micro_service_discovery() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &[]).await;
        let _workers: Vec<_> = ["svc-a", "svc-b"]
            .iter()
            .map(|id| WorkerProcess::start(WORKER, &stack.nats, id, &[]))
            .collect();
        stack.wait_for_workers(2).await;
        let (status, body) = stack.infer(json!({"task": "echo", "input": "x"})).await;
        assert_eq!(status, 200, "{body}");

        let admin = stack.nats.client().await;
        // What `nats micro ls` / `nats micro stats` send: one request, many replies.
        let gather = |subject: &'static str| {
            let admin = admin.clone();
            async move {
                let inbox = admin.new_inbox();
                let mut replies = admin.subscribe(inbox.clone()).await.unwrap();
                admin
                    .publish_with_reply(subject, inbox, "".into())
                    .await
                    .unwrap();
                let mut got = Vec::new();
                while let Ok(Some(m)) =
                    tokio::time::timeout(Duration::from_secs(2), replies.next()).await
                {
                    got.push(serde_json::from_slice::<Value>(&m.payload).unwrap());
                }
                got
            }
        };
        let infos = wait_for("both workers in $SRV.INFO", WAIT, || async {
            let infos = gather("$SRV.INFO.jetinfer-worker").await;
            (infos.len() == 2).then_some(infos)
        })
        .await;
        let ids: BTreeSet<_> = infos
            .iter()
            .map(|i| i["metadata"]["worker_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, BTreeSet::from(["svc-a".into(), "svc-b".into()]));
        assert_eq!(infos[0]["name"], "jetinfer-worker");

        let stats = gather("$SRV.STATS.jetinfer-worker").await;
        assert_eq!(stats.len(), 2, "{stats:?}");
        let processed: u64 = stats
            .iter()
            .map(|s| s["endpoints"][0]["data"]["processed"].as_u64().unwrap())
            .sum();
        assert_eq!(processed, 1, "{stats:?}");

        let status = admin
            .request("infer.worker.svc-a.status", "".into())
            .await
            .expect("status endpoint answers");
        let status: Value = serde_json::from_slice(&status.payload).unwrap();
        assert!(status["in_flight"].is_u64(), "{status}");
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_batches_are_merged_into_one_forward_pass_and_each_answered() {
    tokio::time::timeout(LIMIT, async {
        // Small gateway batches pile up while no worker runs.
        let stack = Stack::start(
            0,
            &["--batch-max-size", "2", "--request-timeout-ms", "90000"],
        )
        .await;
        let texts: Vec<String> = (0..24)
            .map(|i| format!("queued sentence number {i}"))
            .collect();
        let calls: Vec<_> = texts
            .iter()
            .map(|t| stack.infer(json!({"task": "embed", "input": t})))
            .collect();
        let js = async_nats::jetstream::new(stack.nats.client().await);
        let (answers, (worker, listen)) = tokio::join!(futures::future::join_all(calls), async {
            wait_for("batches queued", WAIT, || async {
                let mut stream = js.get_stream("INFER_TASKS").await.ok()?;
                (stream.info().await.ok()?.state.messages >= 8).then_some(())
            })
            .await;
            let listen = format!("127.0.0.1:{}", free_port());
            let worker = WorkerProcess::start(
                WORKER,
                &stack.nats,
                "merger",
                &[
                    ("METRICS_LISTEN", listen.as_str()),
                    ("MAX_BATCH_TOKENS", "4096"),
                ],
            );
            (worker, listen)
        });
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
        }
        // Each answer is its own text's embedding, not a neighbour's.
        let alone = stack
            .infer(json!({"task": "embed", "input": texts[5]}))
            .await
            .1;
        let merged = &answers[5].1["output"]["embedding"];
        let dot: f64 = merged
            .as_array()
            .unwrap()
            .iter()
            .zip(alone["output"]["embedding"].as_array().unwrap())
            .map(|(a, b)| a.as_f64().unwrap() * b.as_f64().unwrap())
            .sum();
        assert!(dot > 0.9999, "cosine {dot}");
        // And batches really were merged (12 batches of 2, at most 8 per pass).
        let (_, page) = get(&format!("http://{listen}/metrics"), None).await;
        let merged = sample(&page, "jetinfer_worker_merged_batches_total", "").unwrap_or(0.0);
        assert!(merged >= 2.0, "no merged pass:\n{page}\n{}", worker.log());
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
