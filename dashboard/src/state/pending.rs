//! Work not answered yet. Two sources, depending on what the dashboard may
//! read:
//! - requests, one row each, from the task subjects: only with input
//!   previews on, since a task message carries every input;
//! - batches, one row each, from the workers' `started` events: what is in
//!   flight where, without a word of content. A batch whose requests are
//!   already listed is not listed again.

use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{preview, TaskBatch};
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

/// Pending rows sent to the page (the count is always exact).
const PENDING_SHOWN: usize = 100;
/// A pending request whose deadline passed this long ago is forgotten: its
/// answer was missed (the dashboard started late or NATS dropped it).
const PENDING_GRACE_MS: u64 = 30_000;
/// A batch known only from its `started` event is forgotten this long after
/// it started, if no end event came: the event was missed. Events carry no
/// deadline; this is four times the gateway's default request timeout.
const RUNNING_KEPT_MS: u64 = 120_000;

/// A request read off a task subject.
#[derive(Debug, Clone)]
struct Queued {
    task: String,
    input: String,
    batch_id: Uuid,
    since_ms: u64,
    deadline_ms: u64,
    worker: Option<String>,
}

/// A batch a worker started, known only from its event.
#[derive(Debug, Clone)]
struct Running {
    worker: String,
    requests: usize,
    since_ms: u64,
}

/// One pending row: a request, or a whole batch in flight.
#[derive(Debug, Clone, Serialize)]
pub struct PendingRow {
    /// Request id; absent on a batch row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// Batch the request travels in, or the batch itself.
    pub batch_id: Uuid,
    /// Requests this row stands for: 1, or the batch's size.
    pub requests: usize,
    /// Task, where known (task messages name it; worker events do not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// `queued`, or `in flight` once a worker started its batch.
    pub state: &'static str,
    /// Worker computing it, when in flight.
    pub worker: Option<String>,
    /// Milliseconds since it was queued (or, for a batch row, started).
    pub age_ms: u64,
    /// Input preview, only where previews are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// Every pending request and batch, by id.
#[derive(Debug, Default)]
pub(super) struct PendingRequests {
    queued: HashMap<Uuid, Queued>,
    running: HashMap<Uuid, Running>,
}

impl PendingRequests {
    /// A batch was published: each of its requests is pending from now on.
    pub(super) fn queued(&mut self, batch: &TaskBatch) {
        let now = now_ms();
        for item in &batch.items {
            let texts = item.input.texts();
            self.queued.insert(
                item.request_id,
                Queued {
                    task: batch.task.to_string(),
                    input: preview(texts.first().copied().unwrap_or_default()),
                    batch_id: batch.batch_id,
                    since_ms: now,
                    deadline_ms: batch.deadline_ms,
                    worker: None,
                },
            );
        }
        self.running.remove(&batch.batch_id);
    }

    /// `worker` started computing `batch` of `requests`: its requests are in
    /// flight, or, when none of them is listed, the batch is.
    pub(super) fn started(&mut self, batch: Uuid, worker: &str, requests: usize) {
        let mut listed = false;
        for q in self.queued.values_mut().filter(|q| q.batch_id == batch) {
            q.worker = Some(worker.to_owned());
            listed = true;
        }
        if listed {
            return;
        }
        let since_ms = self.running.get(&batch).map_or_else(now_ms, |r| r.since_ms);
        self.running.insert(
            batch,
            Running {
                worker: worker.to_owned(),
                requests,
                since_ms,
            },
        );
    }

    /// A worker finished with `batch` (answered, failed or expired it): it
    /// is no longer in flight there. Listed requests wait for their answer.
    pub(super) fn ended(&mut self, batch: &Uuid) {
        self.running.remove(batch);
    }

    /// A gateway answered `request`.
    pub(super) fn finished(&mut self, request: &Uuid) {
        self.queued.remove(request);
    }

    /// Forget requests whose deadline passed more than the grace period ago,
    /// and batches whose end was missed.
    pub(super) fn expire(&mut self, now: u64) {
        self.queued
            .retain(|_, q| q.deadline_ms + PENDING_GRACE_MS > now);
        self.running
            .retain(|_, r| r.since_ms + RUNNING_KEPT_MS > now);
    }

    /// The oldest pending rows at `now` (at most 100), and how many requests
    /// are pending in all.
    pub(super) fn rows(&self, now: u64) -> (Vec<PendingRow>, usize) {
        let requests = self.queued.iter().map(|(id, q)| PendingRow {
            request_id: Some(*id),
            batch_id: q.batch_id,
            requests: 1,
            task: Some(q.task.clone()),
            state: if q.worker.is_some() {
                "in flight"
            } else {
                "queued"
            },
            worker: q.worker.clone(),
            age_ms: now.saturating_sub(q.since_ms),
            input: Some(q.input.clone()),
        });
        let batches = self.running.iter().map(|(id, r)| PendingRow {
            request_id: None,
            batch_id: *id,
            requests: r.requests,
            task: None,
            state: "in flight",
            worker: Some(r.worker.clone()),
            age_ms: now.saturating_sub(r.since_ms),
            input: None,
        });
        let mut rows: Vec<PendingRow> = requests.chain(batches).collect();
        rows.sort_by_key(|p| std::cmp::Reverse(p.age_ms));
        let total = rows.iter().map(|p| p.requests).sum();
        rows.truncate(PENDING_SHOWN);
        (rows, total)
    }
}
