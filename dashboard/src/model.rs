//! What the dashboard knows about the stack, and the snapshot the page renders.
//!
//! The model is fed by [`crate::feed`] and read once a second by each open
//! page. Everything is bounded: a few hundred finished requests and events,
//! five minutes of one-second buckets, and pending requests until they finish
//! or their deadline is long past.

use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{
    preview, GatewayStats, Heartbeat, RequestRecord, TaskBatch, WorkerEvent,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use uuid::Uuid;

/// Seconds of history kept for the charts.
pub const HISTORY_SECS: u64 = 300;
/// Seconds over which rates and percentiles are computed.
pub const WINDOW_SECS: u64 = 60;
/// Events kept.
const EVENTS_KEPT: usize = 100;
/// Pending requests sent to the page (the count is always exact).
const PENDING_SHOWN: usize = 100;
/// A dead worker's row stays this long, then goes.
const DEAD_ROW_MS: u64 = 10 * 60 * 1000;
/// A pending request whose deadline passed this long ago is forgotten.
const PENDING_GRACE_MS: u64 = 30_000;

#[derive(Debug, Clone)]
struct WorkerEntry {
    beat: Heartbeat,
    /// Unix ms when this dashboard last saw a put.
    seen_ms: u64,
    /// The worker deleted its key (clean stop).
    stopped: bool,
    /// A `heartbeat lost` event was already emitted for this death.
    mourned: bool,
}

#[derive(Debug, Clone)]
struct Pending {
    task: String,
    input: String,
    batch_id: Uuid,
    since_ms: u64,
    deadline_ms: u64,
    worker: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct Second {
    completed: u32,
    failed: u32,
    latencies: Vec<f32>,
    by_worker: HashMap<String, u32>,
}

/// Everything observed so far.
#[derive(Debug)]
pub struct Model {
    recent_cap: usize,
    heartbeat_ttl: Duration,
    workers: BTreeMap<String, WorkerEntry>,
    pending: HashMap<Uuid, Pending>,
    recent: VecDeque<RequestRecord>,
    events: VecDeque<WorkerEvent>,
    gateways: BTreeMap<String, GatewayStats>,
    seconds: BTreeMap<u64, Second>,
    queue: Queue,
}

/// Work-queue depth from consumer info.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Queue {
    /// Batches not yet delivered.
    pub pending: u64,
    /// Batches delivered, not yet acked.
    pub in_flight: u64,
    /// Set when the stream could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One row of the workers table.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    /// Worker id.
    pub id: String,
    /// Heartbeat younger than the TTL and not stopped.
    pub alive: bool,
    /// Model served.
    pub model: String,
    /// Tasks pulled.
    pub tasks: Vec<String>,
    /// Batches being computed.
    pub in_flight: u64,
    /// Requests answered.
    pub processed: u64,
    /// Requests failed.
    pub failed: u64,
    /// Batches received again after another delivery failed.
    pub redelivered: u64,
    /// Milliseconds since the last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Compute time of the last batch.
    pub last_batch_ms: f64,
    /// Requests this worker answered in the last minute.
    pub load_last_min: u32,
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

/// One point of the charts.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Unix seconds.
    pub t: u64,
    /// Requests answered ok in that second.
    pub completed: u32,
    /// Requests answered with an error in that second.
    pub failed: u32,
    /// Median latency of that second (ms), null when nothing finished.
    pub p50: Option<f32>,
    /// 95th percentile latency of that second (ms).
    pub p95: Option<f32>,
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
    /// Pending + in flight batches in the work queue.
    pub queue_depth: u64,
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
    /// Pending requests, oldest first (at most 100).
    pub pending: Vec<PendingRow>,
    /// Total pending requests.
    pub pending_total: usize,
    /// Finished requests, newest first.
    pub recent: Vec<RequestRecord>,
    /// Notable events, newest first.
    pub events: Vec<WorkerEvent>,
}

fn percentile(sorted: &[f32], p: f64) -> Option<f32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn sorted(mut v: Vec<f32>) -> Vec<f32> {
    v.sort_by(f32::total_cmp);
    v
}

impl Model {
    /// An empty model keeping `recent_cap` finished requests; workers are dead
    /// `heartbeat_ttl` after their last heartbeat.
    pub fn new(recent_cap: usize, heartbeat_ttl: Duration) -> Self {
        Self {
            recent_cap,
            heartbeat_ttl,
            workers: BTreeMap::new(),
            pending: HashMap::new(),
            recent: VecDeque::new(),
            events: VecDeque::new(),
            gateways: BTreeMap::new(),
            seconds: BTreeMap::new(),
            queue: Queue::default(),
        }
    }

    fn second(&mut self, at_ms: u64) -> &mut Second {
        let t = at_ms / 1000;
        let oldest = t.saturating_sub(HISTORY_SECS);
        while self
            .seconds
            .first_key_value()
            .is_some_and(|(k, _)| *k < oldest)
        {
            self.seconds.pop_first();
        }
        self.seconds.entry(t).or_default()
    }

    fn push_event(&mut self, event: WorkerEvent) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// A worker put its heartbeat.
    pub fn heartbeat(&mut self, beat: Heartbeat) {
        let entry = WorkerEntry {
            beat,
            seen_ms: now_ms(),
            stopped: false,
            mourned: false,
        };
        self.workers.insert(entry.beat.id.clone(), entry);
    }

    /// A worker removed its heartbeat: it stopped cleanly.
    pub fn heartbeat_removed(&mut self, id: &str) {
        if let Some(w) = self.workers.get_mut(id) {
            w.stopped = true;
            w.mourned = true;
        }
    }

    /// A batch was published: its requests are pending.
    pub fn batch_queued(&mut self, batch: &TaskBatch) {
        let now = now_ms();
        for item in &batch.items {
            let texts = item.input.texts();
            self.pending.insert(
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

    /// A worker reported on a batch.
    pub fn worker_event(&mut self, event: WorkerEvent) {
        if event.kind == "started" {
            if let Some(batch) = event.batch_id {
                for p in self.pending.values_mut().filter(|p| p.batch_id == batch) {
                    p.worker = Some(event.worker_id.clone());
                }
            }
            return;
        }
        if event.kind != "completed" {
            self.push_event(event);
        }
    }

    /// A worker published results: `requests` of them, counted as its load.
    pub fn results(&mut self, worker: &str, requests: usize) {
        let second = self.second(now_ms());
        *second.by_worker.entry(worker.to_owned()).or_default() += requests as u32;
    }

    /// A gateway answered a request.
    pub fn request_finished(&mut self, record: RequestRecord) {
        self.pending.remove(&record.request_id);
        let second = self.second(record.finished_at_ms);
        if record.outcome == "ok" {
            second.completed += 1;
        } else {
            second.failed += 1;
        }
        second.latencies.push(record.latency_ms as f32);
        if self.recent.len() >= self.recent_cap {
            self.recent.pop_front();
        }
        if self.recent_cap > 0 {
            self.recent.push_back(record);
        }
    }

    /// A gateway published its counters.
    pub fn gateway_stats(&mut self, gateway: &str, stats: GatewayStats) {
        self.gateways.insert(gateway.to_owned(), stats);
    }

    /// Latest work-queue depth.
    pub fn queue(&mut self, queue: Queue) {
        self.queue = queue;
    }

    /// Render the snapshot for the page at `now`, turning silent workers dead.
    pub fn snapshot(&mut self, nats: String) -> Snapshot {
        let now = now_ms();
        let ttl = self.heartbeat_ttl.as_millis() as u64;
        self.pending
            .retain(|_, p| p.deadline_ms + PENDING_GRACE_MS > now);
        self.workers
            .retain(|_, w| now.saturating_sub(w.seen_ms) < DEAD_ROW_MS);

        let window_start = (now / 1000).saturating_sub(WINDOW_SECS);
        let mut load: HashMap<&str, u32> = HashMap::new();
        let mut window_latencies = Vec::new();
        let mut window_finished = 0u32;
        for (_, s) in self.seconds.range(window_start..) {
            for (w, n) in &s.by_worker {
                *load.entry(w.as_str()).or_default() += n;
            }
            window_latencies.extend_from_slice(&s.latencies);
            window_finished += s.completed + s.failed;
        }
        let window_latencies = sorted(window_latencies);

        let mut lost = Vec::new();
        let workers: Vec<WorkerRow> = self
            .workers
            .values()
            .map(|w| {
                let age = now.saturating_sub(w.seen_ms);
                let alive = !w.stopped && age < ttl;
                if !alive && !w.mourned {
                    lost.push(w.beat.id.clone());
                }
                WorkerRow {
                    id: w.beat.id.clone(),
                    alive,
                    model: w.beat.model.clone(),
                    tasks: w.beat.tasks.iter().map(|t| t.to_string()).collect(),
                    in_flight: if alive { w.beat.in_flight } else { 0 },
                    processed: w.beat.processed,
                    failed: w.beat.failed,
                    redelivered: w.beat.redelivered,
                    heartbeat_age_ms: age,
                    last_batch_ms: w.beat.last_batch_ms,
                    load_last_min: load.get(w.beat.id.as_str()).copied().unwrap_or(0),
                }
            })
            .collect();
        for id in lost {
            if let Some(w) = self.workers.get_mut(&id) {
                w.mourned = true;
            }
            self.push_event(WorkerEvent {
                worker_id: id,
                kind: "lost".into(),
                batch_id: None,
                requests: 0,
                attempt: 0,
                latency_ms: 0.0,
                error: Some("heartbeat expired: worker crashed or unreachable".into()),
                at_ms: now,
            });
        }

        let totals = self
            .gateways
            .values()
            .fold(GatewayStats::default(), |a, g| GatewayStats {
                submitted: a.submitted + g.submitted,
                completed: a.completed + g.completed,
                failed: a.failed + g.failed,
                retried: a.retried + g.retried,
                ..a
            });
        let elapsed = self
            .seconds
            .range(window_start..)
            .next()
            .map_or(1, |(t, _)| (now / 1000).saturating_sub(*t).max(1))
            .min(WINDOW_SECS);
        let metrics = Metrics {
            submitted: totals.submitted,
            completed: totals.completed,
            failed: totals.failed,
            retried: totals.retried,
            queue_depth: self.queue.pending + self.queue.in_flight,
            requests_per_s: f64::from(window_finished) / elapsed as f64,
            p50_ms: percentile(&window_latencies, 50.0),
            p95_ms: percentile(&window_latencies, 95.0),
            gateways: self.gateways.len(),
        };

        let end = now / 1000;
        let series = (end.saturating_sub(HISTORY_SECS - 1)..=end)
            .map(|t| match self.seconds.get(&t) {
                Some(s) => {
                    let lat = sorted(s.latencies.clone());
                    Point {
                        t,
                        completed: s.completed,
                        failed: s.failed,
                        p50: percentile(&lat, 50.0),
                        p95: percentile(&lat, 95.0),
                    }
                }
                None => Point {
                    t,
                    completed: 0,
                    failed: 0,
                    p50: None,
                    p95: None,
                },
            })
            .collect();

        let mut pending: Vec<PendingRow> = self
            .pending
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
        pending.sort_by_key(|p| std::cmp::Reverse(p.age_ms));
        let pending_total = pending.len();
        pending.truncate(PENDING_SHOWN);

        Snapshot {
            nats,
            now_ms: now,
            workers,
            metrics,
            queue: self.queue.clone(),
            series,
            pending,
            pending_total,
            recent: self.recent.iter().rev().cloned().collect(),
            events: self.events.iter().rev().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_shared::protocol::{BatchItem, Priority, Task, TaskInput};

    fn beat(id: &str) -> Heartbeat {
        Heartbeat {
            id: id.into(),
            tasks: vec![Task::Embed],
            model: "m".into(),
            version: "0".into(),
            state: "ready".into(),
            in_flight: 1,
            processed: 5,
            failed: 0,
            redelivered: 0,
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
            input: "x".into(),
            output: None,
            finished_at_ms: now_ms(),
        }
    }

    #[test]
    fn a_silent_worker_turns_dead_once_and_is_mourned_once() {
        let mut m = Model::new(10, Duration::ZERO);
        m.heartbeat(beat("w1"));
        let s = m.snapshot("connected".into());
        assert!(!s.workers[0].alive);
        assert_eq!(s.workers[0].in_flight, 0, "the dead compute nothing");
        assert_eq!(s.events.iter().filter(|e| e.kind == "lost").count(), 1);
        let s = m.snapshot("connected".into());
        assert_eq!(s.events.iter().filter(|e| e.kind == "lost").count(), 1);

        let mut m = Model::new(10, Duration::from_secs(60));
        m.heartbeat(beat("w1"));
        assert!(m.snapshot("connected".into()).workers[0].alive);
        m.heartbeat_removed("w1");
        assert!(!m.snapshot("connected".into()).workers[0].alive);
    }

    #[test]
    fn requests_move_from_pending_to_recent_with_metrics() {
        let mut m = Model::new(2, Duration::from_secs(3));
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let batch = TaskBatch {
            batch_id: Uuid::new_v4(),
            task: Task::Embed,
            priority: Priority::Normal,
            reply_subject: "r".into(),
            deadline_ms: now_ms() + 60_000,
            items: ids
                .iter()
                .map(|id| BatchItem {
                    request_id: *id,
                    input: TaskInput::Embed {
                        text: "hello".into(),
                    },
                })
                .collect(),
        };
        m.batch_queued(&batch);
        let s = m.snapshot("connected".into());
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
        assert!(m
            .snapshot("connected".into())
            .pending
            .iter()
            .all(|p| p.state == "in flight"));

        m.request_finished(record(ids[0], "ok", 10.0));
        m.request_finished(record(ids[1], "ok", 30.0));
        m.request_finished(record(ids[2], "timeout", 50.0));
        let s = m.snapshot("connected".into());
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
}
