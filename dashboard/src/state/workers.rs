//! The workers table: the last heartbeat of every worker seen, and when a
//! silent one counts as dead.

use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::Heartbeat;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A dead worker's row stays this long, then goes.
const DEAD_ROW_MS: u64 = 10 * 60 * 1000;

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

impl WorkerEntry {
    fn alive(&self, now: u64, ttl_ms: u64) -> bool {
        !self.stopped && now.saturating_sub(self.seen_ms) < ttl_ms
    }
}

/// One row of the workers table.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    /// Worker id.
    pub id: String,
    /// Heartbeat younger than the TTL and not stopped.
    pub alive: bool,
    /// Models served.
    pub models: Vec<String>,
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

/// Every worker seen in the last ten minutes, by id (so rows keep their order).
#[derive(Debug, Default)]
pub(super) struct Workers(BTreeMap<String, WorkerEntry>);

impl Workers {
    /// A worker put its heartbeat: it is alive again, whatever it was before.
    pub(super) fn heartbeat(&mut self, beat: Heartbeat) {
        let entry = WorkerEntry {
            beat,
            seen_ms: now_ms(),
            stopped: false,
            mourned: false,
        };
        self.0.insert(entry.beat.id.clone(), entry);
    }

    /// A worker removed its heartbeat: it stopped cleanly, nothing to mourn.
    pub(super) fn removed(&mut self, id: &str) {
        if let Some(w) = self.0.get_mut(id) {
            w.stopped = true;
            w.mourned = true;
        }
    }

    /// Forget rows dead for ten minutes, and return the ids of workers that
    /// went silent since the last call (each is returned once per death).
    pub(super) fn expire(&mut self, now: u64, ttl_ms: u64) -> Vec<String> {
        self.0
            .retain(|_, w| now.saturating_sub(w.seen_ms) < DEAD_ROW_MS);
        self.0
            .values_mut()
            .filter(|w| !w.mourned && !w.alive(now, ttl_ms))
            .map(|w| {
                w.mourned = true;
                w.beat.id.clone()
            })
            .collect()
    }

    /// The table at `now`, with each worker's `load` over the last minute.
    pub(super) fn rows(&self, now: u64, ttl_ms: u64, load: &HashMap<&str, u32>) -> Vec<WorkerRow> {
        self.0
            .values()
            .map(|w| {
                let alive = w.alive(now, ttl_ms);
                WorkerRow {
                    id: w.beat.id.clone(),
                    alive,
                    models: w.beat.models.iter().map(|m| m.name.clone()).collect(),
                    tasks: w.beat.tasks.iter().map(|t| t.to_string()).collect(),
                    in_flight: if alive { w.beat.in_flight } else { 0 },
                    processed: w.beat.processed,
                    failed: w.beat.failed,
                    redelivered: w.beat.redelivered,
                    heartbeat_age_ms: now.saturating_sub(w.seen_ms),
                    last_batch_ms: w.beat.last_batch_ms,
                    load_last_min: load.get(w.beat.id.as_str()).copied().unwrap_or(0),
                }
            })
            .collect()
    }
}
