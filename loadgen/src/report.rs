//! The summary of a run: counts, failures by reason, throughput, latency percentiles.

use crate::client::Record;
use jetinfer_shared::protocol::{Priority, Task};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Latency percentiles of the successful requests, in ms (nearest rank).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Requests sent.
    pub sent: usize,
    /// Answered 200.
    pub succeeded: usize,
    /// Everything else.
    pub failed: usize,
    /// Failures by outcome (error code, `timeout`, `transport`).
    pub failures_by_reason: BTreeMap<String, usize>,
    /// Successful answers that needed at least one redelivery.
    pub retried: usize,
    /// Successful answers the gateway took from its answer cache.
    pub cached: usize,
    /// Wall time of the run, first send to last answer.
    pub duration_s: f64,
    /// Successful answers per second.
    pub throughput_rps: f64,
    /// Latency of the successful answers.
    pub latency_ms: Latency,
    /// Latency of the successful answers of each task (a mixed load's
    /// classes, e.g. photos beside texts).
    pub latency_ms_per_task: BTreeMap<Task, Latency>,
    /// Latency of the successful answers of each priority (`--high-share`).
    pub latency_ms_per_priority: BTreeMap<Priority, Latency>,
    /// Successful answers per worker.
    pub per_worker: BTreeMap<String, usize>,
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Percentiles of `records`' latencies.
fn latency<'a>(records: impl Iterator<Item = &'a &'a Record>) -> Latency {
    let mut lat: Vec<f64> = records.map(|r| r.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    Latency {
        min: lat.first().copied().unwrap_or_default(),
        p50: percentile(&lat, 50.0),
        p90: percentile(&lat, 90.0),
        p95: percentile(&lat, 95.0),
        p99: percentile(&lat, 99.0),
        max: lat.last().copied().unwrap_or_default(),
    }
}

/// Summarise `records` of a run that lasted `duration_s`.
pub fn summarize(records: &[Record], duration_s: f64) -> Summary {
    let ok: Vec<&Record> = records.iter().filter(|r| r.ok()).collect();
    let mut tasks: Vec<Task> = ok.iter().map(|r| r.task).collect();
    tasks.sort();
    tasks.dedup();
    let latency_ms_per_task = tasks
        .into_iter()
        .map(|task| (task, latency(ok.iter().filter(|r| r.task == task))))
        .collect();
    let mut priorities: Vec<Priority> = ok.iter().map(|r| r.priority).collect();
    priorities.sort();
    priorities.dedup();
    let latency_ms_per_priority = priorities
        .into_iter()
        .map(|p| (p, latency(ok.iter().filter(|r| r.priority == p))))
        .collect();
    let mut failures_by_reason = BTreeMap::new();
    for r in records.iter().filter(|r| !r.ok()) {
        *failures_by_reason.entry(r.outcome.clone()).or_default() += 1;
    }
    let mut per_worker = BTreeMap::new();
    for r in &ok {
        *per_worker
            .entry(r.worker_id.clone().unwrap_or_else(|| "-".into()))
            .or_default() += 1;
    }
    Summary {
        sent: records.len(),
        succeeded: ok.len(),
        failed: records.len() - ok.len(),
        failures_by_reason,
        retried: ok.iter().filter(|r| r.retries > 0).count(),
        cached: ok.iter().filter(|r| r.cached).count(),
        duration_s,
        throughput_rps: if duration_s > 0.0 {
            ok.len() as f64 / duration_s
        } else {
            0.0
        },
        latency_ms: latency(ok.iter()),
        latency_ms_per_task,
        latency_ms_per_priority,
        per_worker,
    }
}

/// Print the summary for a person.
pub fn print(s: &Summary) {
    println!(
        "sent {}  succeeded {}  failed {}  retried {}  cached {}",
        s.sent, s.succeeded, s.failed, s.retried, s.cached
    );
    if !s.failures_by_reason.is_empty() {
        println!("failures by reason: {:?}", s.failures_by_reason);
    }
    println!(
        "duration {:.2} s  throughput {:.1} req/s",
        s.duration_s, s.throughput_rps
    );
    let line = |what: &str, l: &Latency| {
        println!(
            "{what}: min {:.0}  p50 {:.0}  p90 {:.0}  p95 {:.0}  p99 {:.0}  max {:.0}",
            l.min, l.p50, l.p90, l.p95, l.p99, l.max
        )
    };
    line("latency ms", &s.latency_ms);
    if s.latency_ms_per_task.len() > 1 {
        for (task, l) in &s.latency_ms_per_task {
            line(&format!("  {task}"), l);
        }
    }
    if let [(_, high), (_, normal)] = s.latency_ms_per_priority.iter().collect::<Vec<_>>()[..] {
        line("  high", high);
        line("  normal", normal);
        println!(
            "  normal ÷ high: p50 {:.2}×  p99 {:.2}×",
            normal.p50 / high.p50,
            normal.p99 / high.p99
        );
    }
    let workers: Vec<String> = s
        .per_worker
        .iter()
        .map(|(w, n)| format!("{w}: {n}"))
        .collect();
    println!("per worker: {}", workers.join("  "));
}

/// Write every record and the summary as one JSON document.
pub fn write_json(path: &Path, records: &[Record], summary: &Summary) -> std::io::Result<()> {
    let doc = serde_json::json!({"summary": summary, "requests": records});
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_shared::protocol::Task;

    fn rec(latency_ms: f64, outcome: &str, worker: &str, retries: u64) -> Record {
        Record {
            index: 0,
            request_id: None,
            task: Task::Embed,
            priority: Priority::Normal,
            sent_at_ms: 0.0,
            latency_ms,
            status: if outcome == "ok" { 200 } else { 503 },
            outcome: outcome.into(),
            worker_id: Some(worker.into()),
            retries,
            cached: false,
            error: None,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn summary_counts_outcomes_workers_and_retries() {
        let urgent = Record {
            priority: Priority::High,
            ..rec(30.0, "ok", "b", 1)
        };
        let records = vec![
            rec(10.0, "ok", "a", 0),
            urgent,
            rec(20.0, "ok", "a", 0),
            rec(5.0, "unavailable", "-", 0),
            rec(5.0, "timeout", "-", 0),
            rec(5.0, "timeout", "-", 0),
        ];
        let s = summarize(&records, 2.0);
        assert_eq!((s.sent, s.succeeded, s.failed, s.retried), (6, 3, 3, 1));
        assert_eq!(s.failures_by_reason["timeout"], 2);
        assert_eq!(s.failures_by_reason["unavailable"], 1);
        assert_eq!(s.per_worker["a"], 2);
        assert_eq!(s.throughput_rps, 1.5);
        assert_eq!(s.latency_ms.min, 10.0);
        assert_eq!(s.latency_ms.p50, 20.0);
        assert_eq!(s.latency_ms.max, 30.0);
        let by_priority = &s.latency_ms_per_priority;
        assert_eq!(by_priority[&Priority::High].p50, 30.0);
        assert_eq!(by_priority[&Priority::Normal].p50, 10.0);
    }
}
