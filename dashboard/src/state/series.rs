//! Per-second history: what the charts draw, and the one-minute window the
//! headline rate, percentiles and per-worker load are computed over.

use jetinfer_shared::protocol::RequestRecord;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Seconds of history kept for the charts.
pub const HISTORY_SECS: u64 = 300;
/// Seconds over which rates and percentiles are computed.
pub const WINDOW_SECS: u64 = 60;

#[derive(Debug, Default, Clone)]
struct Second {
    completed: u32,
    failed: u32,
    latencies: Vec<f32>,
    by_worker: HashMap<String, u32>,
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

/// The last minute, summed.
pub(super) struct Window<'a> {
    /// Requests each worker answered.
    pub(super) load: HashMap<&'a str, u32>,
    /// Median latency (ms), `None` when nothing finished.
    pub(super) p50: Option<f32>,
    /// 95th percentile latency (ms).
    pub(super) p95: Option<f32>,
    /// Requests finished per second.
    pub(super) requests_per_s: f64,
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

/// One bucket per Unix second, the last five minutes only.
#[derive(Debug, Default)]
pub(super) struct Seconds(BTreeMap<u64, Second>);

impl Seconds {
    /// The bucket of `at_ms`, dropping buckets older than the history on the way.
    fn at(&mut self, at_ms: u64) -> &mut Second {
        let t = at_ms / 1000;
        let oldest = t.saturating_sub(HISTORY_SECS);
        while self.0.first_key_value().is_some_and(|(k, _)| *k < oldest) {
            self.0.pop_first();
        }
        self.0.entry(t).or_default()
    }

    /// `worker` published `requests` results at `at_ms`: its load.
    pub(super) fn results(&mut self, at_ms: u64, worker: &str, requests: usize) {
        *self
            .at(at_ms)
            .by_worker
            .entry(worker.to_owned())
            .or_default() += requests as u32;
    }

    /// A gateway answered a request: count it in the second it finished.
    pub(super) fn finished(&mut self, record: &RequestRecord) {
        let second = self.at(record.finished_at_ms);
        if record.outcome == "ok" {
            second.completed += 1;
        } else {
            second.failed += 1;
        }
        second.latencies.push(record.latency_ms as f32);
    }

    /// The minute before `now`.
    pub(super) fn window(&self, now: u64) -> Window<'_> {
        let window_start = (now / 1000).saturating_sub(WINDOW_SECS);
        let mut load: HashMap<&str, u32> = HashMap::new();
        let mut latencies = Vec::new();
        let mut finished = 0u32;
        for (_, s) in self.0.range(window_start..) {
            for (w, n) in &s.by_worker {
                *load.entry(w.as_str()).or_default() += n;
            }
            latencies.extend_from_slice(&s.latencies);
            finished += s.completed + s.failed;
        }
        let latencies = sorted(latencies);
        let elapsed = self
            .0
            .range(window_start..)
            .next()
            .map_or(1, |(t, _)| (now / 1000).saturating_sub(*t).max(1))
            .min(WINDOW_SECS);
        Window {
            load,
            p50: percentile(&latencies, 50.0),
            p95: percentile(&latencies, 95.0),
            requests_per_s: f64::from(finished) / elapsed as f64,
        }
    }

    /// One point per second of the five minutes up to `now`, oldest first.
    pub(super) fn points(&self, now: u64) -> Vec<Point> {
        let end = now / 1000;
        (end.saturating_sub(HISTORY_SECS - 1)..=end)
            .map(|t| match self.0.get(&t) {
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
            .collect()
    }
}
