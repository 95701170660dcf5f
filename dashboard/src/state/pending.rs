//! Requests queued but not answered yet, as seen on the task subjects.

use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{preview, TaskBatch};
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

/// Pending requests sent to the page (the count is always exact).
const PENDING_SHOWN: usize = 100;
/// A pending request whose deadline passed this long ago is forgotten: its
/// answer was missed (the dashboard started late or NATS dropped it).
const PENDING_GRACE_MS: u64 = 30_000;

#[derive(Debug, Clone)]
struct Pending {
    task: String,
    input: String,
    batch_id: Uuid,
    since_ms: u64,
    deadline_ms: u64,
    worker: Option<String>,
}

/// One pending request.
#[derive(Debug, Clone, Serialize)]
pub struct PendingRow {
    /// Request id.
    pub request_id: Uuid,
    /// Task.
    pub task: String,
    /// `queued`, or `in flight` once a worker started its batch.
    pub state: &'static str,
    /// Worker computing it, when in flight.
    pub worker: Option<String>,
    /// Milliseconds since it was queued.
    pub age_ms: u64,
    /// Input preview.
    pub input: String,
}

/// Every pending request, by id.
#[derive(Debug, Default)]
pub(super) struct PendingRequests(HashMap<Uuid, Pending>);

impl PendingRequests {
    /// A batch was published: each of its requests is pending from now on.
    pub(super) fn queued(&mut self, batch: &TaskBatch) {
        let now = now_ms();
        for item in &batch.items {
            let texts = item.input.texts();
            self.0.insert(
                item.request_id,
                Pending {
                    task: batch.task.to_string(),
                    input: preview(texts.first().copied().unwrap_or_default()),
                    batch_id: batch.batch_id,
                    since_ms: now,
                    deadline_ms: batch.deadline_ms,
                    worker: None,
                },
            );
        }
    }

    /// `worker` started computing `batch`: its requests are in flight.
    pub(super) fn started(&mut self, batch: Uuid, worker: &str) {
        for p in self.0.values_mut().filter(|p| p.batch_id == batch) {
            p.worker = Some(worker.to_owned());
        }
    }

    /// A gateway answered `request`.
    pub(super) fn finished(&mut self, request: &Uuid) {
        self.0.remove(request);
    }

    /// Forget requests whose deadline passed more than the grace period ago.
    pub(super) fn expire(&mut self, now: u64) {
        self.0.retain(|_, p| p.deadline_ms + PENDING_GRACE_MS > now);
    }

    /// The oldest pending requests at `now` (at most 100), and how many there are.
    pub(super) fn rows(&self, now: u64) -> (Vec<PendingRow>, usize) {
        let mut rows: Vec<PendingRow> = self
            .0
            .iter()
            .map(|(id, p)| PendingRow {
                request_id: *id,
                task: p.task.clone(),
                state: if p.worker.is_some() {
                    "in flight"
                } else {
                    "queued"
                },
                worker: p.worker.clone(),
                age_ms: now.saturating_sub(p.since_ms),
                input: p.input.clone(),
            })
            .collect();
        rows.sort_by_key(|p| std::cmp::Reverse(p.age_ms));
        let total = rows.len();
        rows.truncate(PENDING_SHOWN);
        (rows, total)
    }
}
