//! What the dashboard knows about the stack: fed by [`crate::feed`], aged by
//! [`StackState::expire`] on a timer, and read by every open page through
//! [`StackState::snapshot`].
//!
//! Everything is bounded: a few hundred finished requests and events, five
//! minutes of one-second buckets, worker rows for ten minutes after their
//! last heartbeat, and pending requests until they finish or their deadline
//! is long past.
//!
//! # Layout
//! - `workers`: last heartbeat per worker, liveness, the workers table.
//! - `pending`: requests and batches not answered yet.
//! - `inputs`: whether request text may be shown (by default it is not).
//! - `series`: per-second buckets behind the charts and the one-minute window.
//! - `ring`: the bounded buffers of finished requests and events.
//! - `snapshot`: the JSON the page renders, and how it is read off the state.

mod inputs;
mod pending;
mod ring;
mod series;
mod snapshot;
mod workers;

pub use inputs::Inputs;
pub use pending::PendingRow;
pub use series::{Point, HISTORY_SECS, WINDOW_SECS};
pub use snapshot::{ConsumerDepth, Metrics, Queue, Snapshot};
pub use workers::WorkerRow;

use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{GatewayStats, Heartbeat, RequestRecord, TaskBatch, WorkerEvent};
use pending::PendingRequests;
use ring::Ring;
use series::Seconds;
use std::collections::BTreeMap;
use std::time::Duration;
use workers::Workers;

/// Events kept.
const EVENTS_KEPT: usize = 100;

/// Everything observed so far.
#[derive(Debug)]
pub struct StackState {
    heartbeat_ttl: Duration,
    workers: Workers,
    pending: PendingRequests,
    recent: Ring<RequestRecord>,
    events: Ring<WorkerEvent>,
    gateways: BTreeMap<String, GatewayStats>,
    seconds: Seconds,
    queue: Queue,
    inputs: Inputs,
}

impl StackState {
    /// An empty state keeping `recent_cap` finished requests; workers are dead
    /// `heartbeat_ttl` after their last heartbeat. Request text is hidden
    /// until [`StackState::inputs`] says otherwise.
    pub fn new(recent_cap: usize, heartbeat_ttl: Duration) -> Self {
        Self {
            heartbeat_ttl,
            workers: Workers::default(),
            pending: PendingRequests::default(),
            recent: Ring::new(recent_cap),
            events: Ring::new(EVENTS_KEPT),
            gateways: BTreeMap::new(),
            seconds: Seconds::default(),
            queue: Queue::default(),
            inputs: Inputs::default(),
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.heartbeat_ttl.as_millis() as u64
    }

    /// A worker put its heartbeat.
    pub fn heartbeat(&mut self, beat: Heartbeat) {
        self.workers.heartbeat(beat);
    }

    /// A worker removed its heartbeat: it stopped cleanly.
    pub fn heartbeat_removed(&mut self, id: &str) {
        self.workers.removed(id);
    }

    /// Whether request text may be shown from now on.
    pub fn inputs(&mut self, inputs: Inputs) {
        self.inputs = inputs;
    }

    /// A batch was published: its requests are pending.
    pub fn batch_queued(&mut self, batch: &TaskBatch) {
        self.pending.queued(batch);
    }

    /// A worker reported on a batch. `started` puts it in flight, and
    /// `completed`, `failed` or `expired` take it out; `completed` is too
    /// frequent to list (the charts show it), anything else goes to the
    /// events table.
    pub fn worker_event(&mut self, event: WorkerEvent) {
        match (event.kind.as_str(), event.batch_id) {
            ("started", Some(batch)) => {
                self.pending
                    .started(batch, &event.worker_id, event.requests);
                return;
            }
            ("completed", Some(batch)) => {
                self.pending.ended(&batch);
                // A worker's load: the requests it answered, counted from its
                // own events, so the dashboard needs no result messages (which
                // carry answers and candidate texts).
                self.seconds
                    .results(now_ms(), &event.worker_id, event.requests);
            }
            ("failed" | "expired", Some(batch)) => self.pending.ended(&batch),
            _ => {}
        }
        if event.kind != "started" && event.kind != "completed" {
            self.events.push(event);
        }
    }

    /// A gateway answered a request; kept without its text unless inputs
    /// are shown.
    pub fn request_finished(&mut self, record: RequestRecord) {
        let record = self.inputs.admit(record);
        self.pending.finished(&record.request_id);
        self.seconds.finished(&record);
        self.recent.push(record);
    }

    /// A gateway published its counters.
    pub fn gateway_stats(&mut self, gateway: &str, stats: GatewayStats) {
        self.gateways.insert(gateway.to_owned(), stats);
    }

    /// Latest work-queue depth.
    pub fn queue(&mut self, queue: Queue) {
        let dead_letters = self.queue.dead_letters;
        self.queue = Queue {
            dead_letters,
            ..queue
        };
    }

    /// Record the dead letters' count (`INFER_DEAD`), polled on its own.
    pub fn dead_letters(&mut self, count: u64) {
        self.queue.dead_letters = count;
    }

    /// Age the state to `now` (Unix ms): forget pending requests long past
    /// their deadline and worker rows dead for ten minutes, and emit one
    /// `lost` event per worker whose heartbeat stopped without a clean exit.
    /// The feed calls this once a second, whether or not a page is open.
    pub fn expire(&mut self, now: u64) {
        self.pending.expire(now);
        for worker_id in self.workers.expire(now, self.ttl_ms()) {
            self.events.push(WorkerEvent {
                worker_id,
                kind: "lost".into(),
                batch_id: None,
                requests: 0,
                attempt: 0,
                latency_ms: 0.0,
                error: Some("heartbeat expired: worker crashed or unreachable".into()),
                at_ms: now,
            });
        }
    }
}

#[cfg(test)]
mod tests;
