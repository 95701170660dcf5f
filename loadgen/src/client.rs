//! One request and what became of it.

use jetinfer_shared::protocol::{Priority, Task};
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Instant;

/// The outcome of one request, as `--per-request` prints and `--json` stores it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// Order in which it was scheduled.
    pub index: usize,
    /// Id the gateway assigned, when it answered with one.
    pub request_id: Option<String>,
    /// Task asked for.
    pub task: Task,
    /// Queue it was sent to (`--high-share`).
    pub priority: Priority,
    /// When it was sent, in ms since the run started.
    pub sent_at_ms: f64,
    /// Time to the answer (or the failure).
    pub latency_ms: f64,
    /// HTTP status; 0 when no response came.
    pub status: u16,
    /// `ok`, the gateway's error code, `timeout` or `transport`.
    pub outcome: String,
    /// Worker that answered.
    pub worker_id: Option<String>,
    /// Redeliveries before the answer.
    pub retries: u64,
    /// Answered from the gateway's answer cache (`"cached": true`).
    pub cached: bool,
    /// Error message, when not ok.
    pub error: Option<String>,
}

impl Record {
    /// True for a 200 answer.
    pub fn ok(&self) -> bool {
        self.outcome == "ok"
    }
}

/// The JSON body for `task`, built from corpus texts, or for
/// `classify_image` from one of `photos` (base64; the plan has some whenever
/// its mix sends images).
pub fn body(task: Task, corpus: &[String], photos: &[String], rng: &mut impl Rng) -> Value {
    let text = &corpus[rng.random_range(0..corpus.len())];
    match task {
        Task::ClassifyImage => {
            let photo = &photos[rng.random_range(0..photos.len())];
            json!({"task": "classify_image", "input": photo})
        }
        Task::Similarity => {
            let candidates: Vec<&String> = (0..3)
                .map(|_| &corpus[rng.random_range(0..corpus.len())])
                .collect();
            json!({"task": "similarity", "input": {"query": text, "candidates": candidates}})
        }
        other => json!({"task": other.as_str(), "input": text}),
    }
}

/// Send one request to `url`'s `/infer` and record the outcome.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    index: usize,
    (task, priority): (Task, Priority),
    body: Value,
    t0: Instant,
) -> Record {
    let sent = Instant::now();
    let response = http.post(format!("{url}/infer")).json(&body).send().await;
    let mut record = Record {
        index,
        request_id: None,
        task,
        priority,
        sent_at_ms: (sent - t0).as_secs_f64() * 1000.0,
        latency_ms: 0.0,
        status: 0,
        outcome: String::new(),
        worker_id: None,
        retries: 0,
        cached: false,
        error: None,
    };
    match response {
        Ok(r) => {
            record.status = r.status().as_u16();
            let json: Value = r.json().await.unwrap_or(Value::Null);
            record.request_id = json["request_id"].as_str().map(str::to_owned);
            record.worker_id = json["worker_id"].as_str().map(str::to_owned);
            record.retries = json["retries"].as_u64().unwrap_or(0);
            record.cached = json["cached"].as_bool().unwrap_or(false);
            if record.status == 200 {
                record.outcome = "ok".into();
            } else {
                record.outcome = json["error"]
                    .as_str()
                    .map_or_else(|| format!("http_{}", record.status), str::to_owned);
                record.error = json["message"].as_str().map(str::to_owned);
            }
        }
        Err(e) => {
            record.outcome = if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            }
            .into();
            record.error = Some(e.to_string());
        }
    }
    record.latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
    record
}
