//! The snapshot: the JSON the page renders, served by `/api/snapshot` and
//! once a second on the SSE stream. Building it only reads the state, so any
//! number of open pages see the same stack and change nothing.

use super::inputs::Inputs;
use super::pending::PendingRow;
use super::series::Point;
use super::workers::WorkerRow;
use super::StackState;
use jetinfer_shared::protocol::{GatewayStats, RequestRecord, WorkerEvent};
use serde::Serialize;

/// Work-queue depth from consumer info.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Queue {
    /// Batches not yet delivered.
    pub pending: u64,
    /// Batches delivered, not yet acked.
    pub in_flight: u64,
    /// Batches in `INFER_DEAD`: given up on, malformed or expired, kept for
    /// an operator (`jetinfer dead ls`).
    pub dead_letters: u64,
    /// The same per work consumer (`work-<model>-<task>-<priority>`), by name.
    pub consumers: Vec<ConsumerDepth>,
    /// Set when the stream could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One work consumer's backlog.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ConsumerDepth {
    /// Its name.
    pub name: String,
    /// Batches not yet delivered.
    pub pending: u64,
    /// Batches delivered, not yet acked.
    pub in_flight: u64,
}

/// Headline numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// Summed over gateways, since each started.
    pub submitted: u64,
    /// Summed over gateways.
    pub completed: u64,
    /// Summed over gateways.
    pub failed: u64,
    /// Summed over gateways.
    pub retried: u64,
    /// Summed over gateways: clients that hung up before their answer.
    pub client_gone: u64,
    /// Pending + in flight batches in the work queue.
    pub queue_depth: u64,
    /// Batches in the dead letters (`INFER_DEAD`).
    pub dead_letters: u64,
    /// Requests finished per second over the last minute.
    pub requests_per_s: f64,
    /// Latency percentiles over the last minute (ms).
    pub p50_ms: Option<f32>,
    /// Latency percentiles over the last minute (ms).
    pub p95_ms: Option<f32>,
    /// Gateways reporting.
    pub gateways: usize,
}

/// What the page renders, once a second.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// NATS connection state as the dashboard sees it.
    pub nats: String,
    /// Whether request text is shown.
    pub inputs: Inputs,
    /// Unix ms of the snapshot.
    pub now_ms: u64,
    /// Workers, alive and recently dead.
    pub workers: Vec<WorkerRow>,
    /// Headline numbers.
    pub metrics: Metrics,
    /// Work-queue depth.
    pub queue: Queue,
    /// One point per second, oldest first, covering the last five minutes.
    pub series: Vec<Point>,
    /// Pending requests and batches in flight, oldest first (at most 100).
    pub pending: Vec<PendingRow>,
    /// Total pending requests.
    pub pending_total: usize,
    /// Finished requests, newest first.
    pub recent: Vec<RequestRecord>,
    /// Notable events, newest first.
    pub events: Vec<WorkerEvent>,
}

impl StackState {
    /// Render the page's view at `now` (Unix ms), with `nats` as the
    /// connection state. A pure read: ageing the state (dead workers, stale
    /// pending requests) is [`StackState::expire`]'s job.
    pub fn snapshot(&self, nats: String, now: u64) -> Snapshot {
        let window = self.seconds.window(now);
        let totals = self
            .gateways
            .values()
            .fold(GatewayStats::default(), |a, g| GatewayStats {
                submitted: a.submitted + g.submitted,
                completed: a.completed + g.completed,
                failed: a.failed + g.failed,
                retried: a.retried + g.retried,
                client_gone: a.client_gone + g.client_gone,
                ..a
            });
        let metrics = Metrics {
            submitted: totals.submitted,
            completed: totals.completed,
            failed: totals.failed,
            retried: totals.retried,
            client_gone: totals.client_gone,
            queue_depth: self.queue.pending + self.queue.in_flight,
            dead_letters: self.queue.dead_letters,
            requests_per_s: window.requests_per_s,
            p50_ms: window.p50,
            p95_ms: window.p95,
            gateways: self.gateways.len(),
        };
        let (pending, pending_total) = self.pending.rows(now);
        Snapshot {
            nats,
            inputs: self.inputs,
            now_ms: now,
            workers: self.workers.rows(now, self.ttl_ms(), &window.load),
            metrics,
            queue: self.queue.clone(),
            series: self.seconds.points(now),
            pending,
            pending_total,
            recent: self.recent.newest_first(),
            events: self.events.newest_first(),
        }
    }
}
