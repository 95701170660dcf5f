use super::*;
use jetinfer_shared::protocol::{BatchItem, Priority, Task, TaskInput};
use uuid::Uuid;

fn beat(id: &str) -> Heartbeat {
    Heartbeat {
        id: id.into(),
        tasks: vec![Task::Embed],
        models: vec![jetinfer_shared::protocol::ServedModel {
            name: "m".into(),
            tasks: vec![Task::Embed],
        }],
        version: "0".into(),
        state: "ready".into(),
        in_flight: 1,
        processed: 5,
        failed: 0,
        redelivered: 0,
        cancelled: 0,
        last_batch_ms: 3.0,
        started_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn record(id: Uuid, outcome: &str, latency_ms: f64) -> RequestRecord {
    RequestRecord {
        request_id: id,
        task: Task::Embed,
        outcome: outcome.into(),
        status: 200,
        worker_id: Some("w1".into()),
        retries: 0,
        latency_ms,
        error: None,
        input_chars: 6,
        input_hash: "0123456789ab".into(),
        input: "secret".into(),
        output: Some("secret out".into()),
        finished_at_ms: now_ms(),
    }
}

fn embed_batch(ids: &[Uuid], deadline_ms: u64) -> TaskBatch {
    TaskBatch {
        batch_id: Uuid::new_v4(),
        model: jetinfer_shared::protocol::ModelName::default_for(Task::Embed),
        task: Task::Embed,
        priority: Priority::Normal,
        reply_subject: "r".into(),
        deadline_ms,
        items: ids
            .iter()
            .map(|id| BatchItem {
                request_id: *id,
                input: TaskInput::Embed {
                    text: "hello".into(),
                },
                idempotency: None,
                deferred: None,
            })
            .collect(),
    }
}

/// What a page sees right after the feed's timer ran.
fn look(s: &mut StackState) -> Snapshot {
    let now = now_ms();
    s.expire(now);
    s.snapshot("connected".into(), now)
}

fn lost(s: &Snapshot) -> usize {
    s.events.iter().filter(|e| e.kind == "lost").count()
}

#[test]
fn a_silent_worker_turns_dead_once_and_is_mourned_once() {
    let mut m = StackState::new(10, Duration::ZERO);
    m.heartbeat(beat("w1"));
    let s = look(&mut m);
    assert!(!s.workers[0].alive);
    assert_eq!(s.workers[0].in_flight, 0, "the dead compute nothing");
    assert_eq!(lost(&s), 1);
    assert_eq!(lost(&look(&mut m)), 1);

    let mut m = StackState::new(10, Duration::from_secs(60));
    m.heartbeat(beat("w1"));
    assert!(look(&mut m).workers[0].alive);
    m.heartbeat_removed("w1");
    assert!(!look(&mut m).workers[0].alive);
}

#[test]
fn snapshot_reads_and_only_expire_ages() {
    let mut m = StackState::new(10, Duration::ZERO);
    m.heartbeat(beat("w1"));
    m.batch_queued(&embed_batch(&[Uuid::new_v4()], 0));
    let now = now_ms();
    let first = serde_json::to_value(m.snapshot("connected".into(), now)).unwrap();
    let again = serde_json::to_value(m.snapshot("connected".into(), now)).unwrap();
    assert_eq!(first, again, "reading twice sees the same state");
    assert_eq!(first["pending_total"], 1, "not pruned by a read");
    assert_eq!(
        first["events"].as_array().unwrap().len(),
        0,
        "no lost event yet"
    );
    assert_eq!(
        first["workers"][0]["alive"], false,
        "liveness is still computed"
    );

    m.expire(now);
    let s = m.snapshot("connected".into(), now);
    assert_eq!(s.pending_total, 0, "long past its deadline");
    assert_eq!(lost(&s), 1);
}

#[test]
fn requests_move_from_pending_to_recent_with_metrics() {
    let mut m = StackState::new(2, Duration::from_secs(3));
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let batch = embed_batch(&ids, now_ms() + 60_000);
    m.batch_queued(&batch);
    let s = look(&mut m);
    assert_eq!(s.pending_total, 3);
    assert!(s.pending.iter().all(|p| p.state == "queued"));
    m.worker_event(WorkerEvent {
        worker_id: "w1".into(),
        kind: "started".into(),
        batch_id: Some(batch.batch_id),
        requests: 3,
        attempt: 1,
        latency_ms: 0.0,
        error: None,
        at_ms: now_ms(),
    });
    assert!(look(&mut m).pending.iter().all(|p| p.state == "in flight"));

    m.request_finished(record(ids[0], "ok", 10.0));
    m.request_finished(record(ids[1], "ok", 30.0));
    m.request_finished(record(ids[2], "timeout", 50.0));
    let s = look(&mut m);
    assert_eq!(s.pending_total, 0);
    assert_eq!(s.recent.len(), 2, "bounded");
    assert_eq!(s.recent[0].request_id, ids[2], "newest first");
    assert_eq!(s.metrics.p50_ms, Some(30.0));
    assert_eq!(s.metrics.p95_ms, Some(50.0));
    let completed: u32 = s.series.iter().map(|p| p.completed).sum();
    let failed: u32 = s.series.iter().map(|p| p.failed).sum();
    assert_eq!((completed, failed), (2, 1));
    assert_eq!(s.series.len() as u64, HISTORY_SECS);
    assert!(s.metrics.requests_per_s > 0.0);
}

fn event(kind: &str, batch: Uuid, requests: usize) -> WorkerEvent {
    WorkerEvent {
        worker_id: "w1".into(),
        kind: kind.into(),
        batch_id: Some(batch),
        requests,
        attempt: 1,
        latency_ms: 0.0,
        error: None,
        at_ms: now_ms(),
    }
}

#[test]
fn hidden_inputs_keep_the_length_and_hash_and_drop_the_text() {
    let mut m = StackState::new(10, Duration::from_secs(3));
    m.request_finished(record(Uuid::new_v4(), "ok", 1.0));
    let mut private = record(Uuid::new_v4(), "ok", 1.0);
    private.input.clear();
    private.output = Some("384 floats".into());
    m.request_finished(private);
    let s = serde_json::to_value(look(&mut m)).unwrap();
    assert_eq!(s["inputs"], "hidden", "the default");
    let shown = s.to_string();
    assert!(!shown.contains("secret"), "{shown}");
    assert_eq!(s["recent"][1]["input_chars"], 6);
    assert_eq!(s["recent"][1]["input_hash"], "0123456789ab");
    assert_eq!(
        s["recent"][0]["output"], "384 floats",
        "a gateway's private summary stays"
    );

    m.inputs(Inputs::Shown);
    m.request_finished(record(Uuid::new_v4(), "ok", 1.0));
    let s = look(&mut m);
    assert_eq!(s.recent[0].input, "secret");
    assert_eq!(s.recent[0].output.as_deref(), Some("secret out"));
}

#[test]
fn batches_in_flight_are_listed_from_worker_events_alone() {
    let mut m = StackState::new(10, Duration::from_secs(3));
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    m.worker_event(event("started", a, 4));
    m.worker_event(event("started", b, 2));
    let s = look(&mut m);
    assert_eq!(s.pending_total, 6, "requests, not rows");
    assert_eq!(s.pending.len(), 2);
    assert!(s
        .pending
        .iter()
        .all(|p| p.request_id.is_none() && p.input.is_none() && p.state == "in flight"));
    assert!(s.events.is_empty(), "a start is not an event to list");

    m.worker_event(event("completed", a, 4));
    m.worker_event(event("failed", b, 2));
    let s = look(&mut m);
    assert_eq!(s.pending_total, 0);
    assert_eq!(s.events.len(), 1, "the failure is listed");

    // With previews, a started batch's requests are listed, not the batch.
    let ids = [Uuid::new_v4(), Uuid::new_v4()];
    let batch = embed_batch(&ids, now_ms() + 60_000);
    m.batch_queued(&batch);
    m.worker_event(event("started", batch.batch_id, 2));
    let s = look(&mut m);
    assert_eq!((s.pending.len(), s.pending_total), (2, 2));
    assert!(s.pending.iter().all(|p| p.request_id.is_some()
        && p.input.as_deref() == Some("hello")
        && p.worker.as_deref() == Some("w1")));
}

#[test]
fn a_workers_load_is_counted_from_its_completed_events() {
    let mut m = StackState::new(10, Duration::from_secs(3));
    m.heartbeat(beat("w1"));
    m.worker_event(event("started", Uuid::new_v4(), 4));
    m.worker_event(event("completed", Uuid::new_v4(), 4));
    m.worker_event(event("completed", Uuid::new_v4(), 3));
    m.worker_event(event("failed", Uuid::new_v4(), 5));
    let s = look(&mut m);
    assert_eq!(s.workers[0].load_last_min, 7, "answered requests only");
}
