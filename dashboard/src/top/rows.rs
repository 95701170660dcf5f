//! The tables `jetinfer-top` shows, as text cells: the live screen lays them
//! out with ratatui, `--once` pads them into columns; both read them here.

use crate::state::Snapshot;

/// A table: its header and its rows, cell by cell.
pub struct Table {
    /// Column titles.
    pub header: Vec<&'static str>,
    /// One row of cells each, in order.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The width of each column over its header and its first `limit` rows.
    pub fn widths(&self, limit: usize) -> Vec<usize> {
        let shown = &self.rows[..self.rows.len().min(limit)];
        (0..self.header.len())
            .map(|i| {
                let cells = shown.iter().map(|r| r[i].chars().count());
                cells.chain([self.header[i].len()]).max().unwrap_or(0)
            })
            .collect()
    }
}

/// The headline numbers, as `name value` pairs.
pub fn totals(s: &Snapshot) -> Vec<(&'static str, String)> {
    let m = &s.metrics;
    vec![
        ("submitted", m.submitted.to_string()),
        ("completed", m.completed.to_string()),
        ("failed", m.failed.to_string()),
        ("retried", m.retried.to_string()),
        ("queue depth", m.queue_depth.to_string()),
        ("dead letters", m.dead_letters.to_string()),
        ("req/s (1 min)", format!("{:.1}", m.requests_per_s)),
        ("p50", ms(m.p50_ms)),
        ("p95", ms(m.p95_ms)),
        ("gateways", m.gateways.to_string()),
    ]
}

/// Workers, alive and recently dead.
pub fn workers(s: &Snapshot) -> Table {
    Table {
        header: vec![
            "WORKER",
            "STATE",
            "MODELS",
            "IN FLIGHT",
            "PROCESSED",
            "FAILED",
            "REDELIVERED",
            "HEARTBEAT",
            "LAST BATCH",
        ],
        rows: (s.workers.iter())
            .map(|w| {
                vec![
                    w.id.clone(),
                    if w.alive { "alive" } else { "dead" }.to_owned(),
                    w.models.join(","),
                    w.in_flight.to_string(),
                    w.processed.to_string(),
                    w.failed.to_string(),
                    w.redelivered.to_string(),
                    format!("{:.1} s ago", w.heartbeat_age_ms as f64 / 1000.0),
                    format!("{:.1} ms", w.last_batch_ms),
                ]
            })
            .collect(),
    }
}

/// Queue depth per work consumer.
pub fn queue(s: &Snapshot) -> Table {
    Table {
        header: vec!["CONSUMER", "PENDING", "IN FLIGHT"],
        rows: (s.queue.consumers.iter())
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.pending.to_string(),
                    c.in_flight.to_string(),
                ]
            })
            .collect(),
    }
}

/// Notable events, newest first.
pub fn events(s: &Snapshot) -> Table {
    Table {
        header: vec!["TIME", "WORKER", "EVENT", "REQUESTS", "ATTEMPT", "DETAIL"],
        rows: (s.events.iter())
            .map(|e| {
                vec![
                    clock(e.at_ms),
                    e.worker_id.clone(),
                    e.kind.clone(),
                    e.requests.to_string(),
                    e.attempt.to_string(),
                    e.error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    }
}

/// Finished requests, newest first: no request text (as on the page).
pub fn requests(s: &Snapshot) -> Table {
    Table {
        header: vec![
            "TIME", "TASK", "OUTCOME", "STATUS", "LATENCY", "WORKER", "RETRIES", "INPUT",
        ],
        rows: (s.recent.iter())
            .map(|r| {
                vec![
                    clock(r.finished_at_ms),
                    r.task.to_string(),
                    r.outcome.clone(),
                    r.status.to_string(),
                    format!("{:.1} ms", r.latency_ms),
                    r.worker_id.clone().unwrap_or_else(|| "-".into()),
                    r.retries.to_string(),
                    format!("{} chars · #{}", r.input_chars, r.input_hash),
                ]
            })
            .collect(),
    }
}

/// `12 ms`, or `-` when there is nothing to measure.
fn ms(v: Option<f32>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0} ms"))
}

/// Unix ms as the UTC time of day, `hh:mm:ss`.
pub fn clock(at_ms: u64) -> String {
    let s = at_ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}
