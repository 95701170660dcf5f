//! `"priority": "high"` skips the backlog: with one worker behind a queue of
//! `normal` batches, `high` requests sent afterwards are answered while most
//! of that backlog still waits. The test checks the order in which answers
//! come back, not a time; the latencies it prints are for the reader.

use crate::stack::{Stack, WORKER};
use jetinfer_testsupport::{wait_for, WorkerProcess};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(180);
const NORMAL: usize = 600;
const HIGH: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn high_priority_requests_overtake_a_normal_backlog() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(
            0,
            &["--batch-max-size", "4", "--request-timeout-ms", "120000"],
        )
        .await;
        // One slow worker (50 ms a pass, at most 8 batches of 4 a pass), so
        // 150 normal batches stay queued for seconds.
        let _worker = WorkerProcess::start(
            WORKER,
            &stack.nats,
            "only",
            &[("DELAY_MIN_MS", "50"), ("DELAY_MAX_MS", "50"), ("MODELS", "all-minilm-l6-v2")],
        );
        stack.wait_for_workers(1).await;
        let answered: Arc<Mutex<Vec<(&str, f64)>>> = Arc::default();
        let send = |kind: &'static str, i: usize| {
            let answered = answered.clone();
            let body = json!({"task": "embed", "input": format!("{kind} request {i}"), "priority": kind});
            let stack = &stack;
            async move {
                let started = Instant::now();
                let (status, body) = stack.infer(body).await;
                assert_eq!(status, 200, "{body}");
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                answered.lock().unwrap().push((kind, ms));
            }
        };
        let backlog = futures::future::join_all((0..NORMAL).map(|i| send("normal", i)));
        let urgent = async {
            let pending = wait_for("a backlog of 40 batches", Duration::from_secs(60), || async {
                let pending = stack.status().await?["queue"]["pending"].as_u64()?;
                (pending >= 40).then_some(pending)
            })
            .await;
            futures::future::join_all((0..HIGH).map(|i| send("high", i))).await;
            pending
        };
        let (_, pending) = tokio::join!(backlog, urgent);

        let answered = std::mem::take(&mut *answered.lock().unwrap());
        let last_high = answered.iter().rposition(|(kind, _)| *kind == "high").unwrap();
        let normal_after = answered[last_high..]
            .iter()
            .filter(|(kind, _)| *kind == "normal")
            .count();
        let p50 = |kind: &str| {
            let mut ms: Vec<f64> = (answered.iter())
                .filter(|(k, _)| *k == kind)
                .map(|(_, ms)| *ms)
                .collect();
            ms.sort_by(f64::total_cmp);
            ms[ms.len() / 2]
        };
        println!(
            "backlog {pending} batches when {HIGH} high requests were sent; {normal_after} normal answered after the last high; p50 high {:.0} ms, normal {:.0} ms",
            p50("high"),
            p50("normal")
        );
        // The high batches are pulled by the worker's next pass or the one
        // after (at most 16 batches, 64 requests); 40 batches were waiting.
        assert!(
            normal_after >= 64,
            "only {normal_after} normal requests were answered after the last high one"
        );
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
