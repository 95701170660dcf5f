//! Stopping is bounded: `docker compose stop` and the launcher send SIGTERM,
//! and a worker must exit within seconds, also when NATS is unreachable
//! (before it ever connected, or gone while it served). `/healthz` on the
//! metrics port says whether it is connected and heartbeating.

use crate::stack::WORKER;
use jetinfer_testsupport::{wait_for, NatsServer, WorkerProcess};
use std::time::Duration;

/// Hang guard: a stop that takes longer than this never ends by itself.
const STOP_BOUND: Duration = Duration::from_secs(15);

/// Send SIGTERM and wait for the exit; the worker must end cleanly (status 0).
async fn stops_cleanly(worker: &mut WorkerProcess) {
    worker.terminate();
    let status = wait_for("the worker to exit after SIGTERM", STOP_BOUND, || {
        let exited = worker.exited();
        async move { exited }
    })
    .await;
    assert!(status.success(), "exit {status}; log:\n{}", worker.log());
}

/// The address the worker's log says it serves `/metrics` (and `/healthz`) on.
async fn metrics_addr(worker: &WorkerProcess) -> String {
    wait_for(
        "the worker's metrics address",
        Duration::from_secs(60),
        || {
            let log = worker.log();
            async move {
                let at = log.find("metrics=")? + "metrics=".len();
                let addr: String = log[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                Some(addr)
            }
        },
    )
    .await
}

async fn healthz(addr: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("metrics port reachable");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_that_never_reached_nats() {
    let nats = NatsServer::start();
    nats.kill(); // its credentials stay valid; nothing listens any more
    let mut worker = WorkerProcess::start(WORKER, &nats, "orphan", &[]);
    let addr = metrics_addr(&worker).await;
    let (status, body) = healthz(&addr).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("starting")),
        "{body}"
    );
    stops_cleanly(&mut worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_whose_nats_went_away() {
    let nats = NatsServer::start();
    let mut worker = WorkerProcess::start(WORKER, &nats, "stranded", &[]);
    let addr = metrics_addr(&worker).await;
    wait_for("a healthy worker", Duration::from_secs(60), || async {
        let (status, body) = healthz(&addr).await;
        (status == 200 && body["status"] == "ok").then_some(())
    })
    .await;

    nats.kill();
    wait_for(
        "/healthz to see NATS gone",
        Duration::from_secs(30),
        || async {
            let (status, body) = healthz(&addr).await;
            (status == 503).then_some(body)
        },
    )
    .await;
    stops_cleanly(&mut worker).await;
}
