//! Request text: hidden by default, even where NATS would allow reading it;
//! shown with `--show-inputs` where NATS allows; and with our `nats.conf`,
//! which does not, refused and said so.

use crate::harness::{args, http, snapshot, Dashboard, WAIT};
use jetinfer_shared::protocol::{
    self, BatchItem, ModelName, Priority, RequestRecord, Task, TaskBatch, TaskInput,
};
use jetinfer_shared::{clock::now_ms, subjects};
use jetinfer_testsupport::{wait_for, NatsServer};
use uuid::Uuid;

const CANARY: &str = "canary-4f1d-private-text";

/// Publish, as the gateway would, a batch with one request carrying
/// [`CANARY`] and, a moment later, that request's finished record.
async fn traffic(admin: &async_nats::Client) {
    let request_id = Uuid::new_v4();
    let echo = ModelName::default_for(Task::Echo);
    let batch = TaskBatch {
        batch_id: Uuid::new_v4(),
        model: echo.clone(),
        task: Task::Echo,
        priority: Priority::Normal,
        reply_subject: subjects::result_subject("gw-t"),
        deadline_ms: now_ms() + 60_000,
        items: vec![BatchItem {
            request_id,
            input: TaskInput::Echo {
                text: CANARY.into(),
            },
            idempotency: None,
            deferred: None,
        }],
    };
    let subject = subjects::task_subject(&echo, Task::Echo, Priority::Normal);
    admin
        .publish(subject, protocol::encode(&batch).unwrap().into())
        .await
        .unwrap();
    let record = RequestRecord {
        request_id: Uuid::new_v4(),
        task: Task::Echo,
        outcome: "ok".into(),
        status: 200,
        worker_id: Some("w1".into()),
        retries: 0,
        latency_ms: 3.0,
        error: None,
        input_chars: CANARY.chars().count(),
        input_hash: "a1b2c3d4e5f6".into(),
        input: CANARY.into(),
        output: Some(CANARY.into()),
        finished_at_ms: now_ms(),
    };
    let subject = subjects::event_subject("gw-t", "request");
    admin
        .publish(subject, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();
    admin.flush().await.unwrap();
}

/// Send traffic until a finished request shows (so the feed is live), then
/// what the dashboard says.
async fn after_traffic(nats: &NatsServer, dashboard: &Dashboard) -> serde_json::Value {
    let admin = nats.client().await;
    let http = http();
    wait_for("a finished request on the dashboard", WAIT, || async {
        traffic(&admin).await;
        let s = snapshot(&http, &dashboard.url).await?;
        (!s["recent"].as_array()?.is_empty()).then_some(s)
    })
    .await;
    // The batch went first: had it been read, its request would be pending.
    snapshot(&http, &dashboard.url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_inputs_read_no_task_subject_even_where_nats_allows_it() {
    let nats = NatsServer::start();
    // As admin, NATS would deliver the task subjects: the dashboard must not ask.
    let dashboard = Dashboard::start(args(&nats, "admin", &[])).await;
    let s = after_traffic(&nats, &dashboard).await;
    assert_eq!(s["inputs"], "hidden");
    assert_eq!(s["pending_total"], 0, "no task subscription: {s}");
    let text = s.to_string();
    assert!(!text.contains(CANARY), "{text}");
    assert_eq!(s["recent"][0]["input_chars"], CANARY.chars().count());
    assert_eq!(s["recent"][0]["input_hash"], "a1b2c3d4e5f6");
    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shown_inputs_preview_pending_and_finished_requests_where_nats_allows_it() {
    let nats = NatsServer::start();
    let dashboard = Dashboard::start(args(&nats, "admin", &["--show-inputs"])).await;
    // The previews ride their own connection, which may subscribe after the
    // first traffic: send until a pending and a finished request both show
    // their text.
    let admin = nats.client().await;
    let http = http();
    let s = wait_for(
        "a pending and a finished request previewed",
        WAIT,
        || async {
            traffic(&admin).await;
            let s = snapshot(&http, &dashboard.url).await?;
            let previewed = s["pending"]
                .as_array()?
                .iter()
                .any(|p| p["input"] == CANARY);
            let finished = s["recent"].as_array()?.iter().any(|r| r["input"] == CANARY);
            (previewed && finished).then_some(s)
        },
    )
    .await;
    assert_eq!(s["inputs"], "shown");
    dashboard.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_inputs_under_our_nats_conf_is_refused_and_said_so() {
    let nats = NatsServer::start();
    let dashboard = Dashboard::start(args(&nats, "dashboard", &["--show-inputs"])).await;
    let http = http();
    wait_for("the page to say previews were refused", WAIT, || async {
        let s = snapshot(&http, &dashboard.url).await?;
        (s["inputs"] == "refused").then_some(())
    })
    .await;
    let s = after_traffic(&nats, &dashboard).await;
    assert_eq!(s["pending_total"], 0, "{s}");
    assert_eq!(
        s["recent"][0]["input"], CANARY,
        "the gateway's previews still show"
    );
    dashboard.stop().await;
}
