//! Running a traffic plan against a gateway: open-loop schedules or closed-loop clients.

use crate::client::{self, Record};
use crate::traffic::{self, Pattern, Shape, TaskMix};
use indicatif::{ProgressBar, ProgressStyle};
use jetinfer_shared::protocol::Priority;
use rand::Rng;
use rand::SeedableRng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Gateway base URL (the only target).
    pub url: String,
    /// Traffic pattern.
    pub pattern: Pattern,
    /// Count, rate and bursts.
    pub shape: Shape,
    /// Clients of the `closed` pattern.
    pub concurrency: usize,
    /// No request is sent after this much time.
    pub max_duration: Duration,
    /// Which tasks, by weight.
    pub tasks: TaskMix,
    /// Input texts.
    pub corpus: Arc<Vec<String>>,
    /// Photos for `classify_image`, base64-encoded (`--images`).
    pub photos: Arc<Vec<String>>,
    /// Share of requests sent with `"priority": "high"` (0 to 1).
    pub high_share: f64,
    /// Seed of every random choice (schedule, tasks, texts, priorities).
    pub seed: u64,
    /// Per-request client timeout.
    pub timeout: Duration,
    /// Bearer token for a gateway with `API_KEYS` set.
    pub api_key: Option<String>,
    /// HTTP/2 (prior knowledge) over this many connections; 0: HTTP/1.1.
    pub http2_connections: usize,
}

/// How progress is shown while the run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// One line per finished request.
    PerRequest,
    /// A progress bar.
    Bar,
    /// Nothing (tests, benchmarks).
    Quiet,
}

struct Shown {
    mode: Progress,
    bar: Option<ProgressBar>,
}

impl Shown {
    fn new(mode: Progress, total: usize) -> Self {
        let bar = (mode == Progress::Bar).then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} answered  {per_sec}  eta {eta}  {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Self { mode, bar }
    }

    fn finished(&self, r: &Record) {
        match self.mode {
            Progress::PerRequest => println!(
                "#{:<5} {:<10} {:>3} {:<18} {:<10} retries {} {:>8.1} ms {}",
                r.index,
                r.task,
                r.status,
                r.outcome,
                r.worker_id.as_deref().unwrap_or("-"),
                r.retries,
                r.latency_ms,
                r.request_id
                    .as_deref()
                    .unwrap_or(r.error.as_deref().unwrap_or(""))
            ),
            Progress::Bar => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                    if !r.ok() {
                        bar.set_message(format!("last failure: {}", r.outcome));
                    }
                }
            }
            Progress::Quiet => {}
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Run `plan`; returns every record (in finishing order) and the wall time.
pub async fn execute(plan: &Plan, progress: Progress) -> anyhow::Result<(Vec<Record>, Duration)> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &plan.api_key {
        let mut value: reqwest::header::HeaderValue = format!("Bearer {key}").parse()?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    // One client per HTTP/2 connection: a client multiplexes all its
    // requests on one. Over HTTP/1.1 one client pools as many as are needed.
    let clients = (0..plan.http2_connections.max(1))
        .map(|_| {
            let builder = reqwest::Client::builder()
                .default_headers(headers.clone())
                .timeout(plan.timeout)
                .pool_max_idle_per_host(1024);
            match plan.http2_connections {
                0 => builder,
                _ => builder.http2_prior_knowledge(),
            }
            .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let http = |i: usize| clients[i % clients.len()].clone();
    let shown = Arc::new(Shown::new(progress, plan.shape.requests));
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed);
    let t0 = Instant::now();
    let mut jobs = JoinSet::new();
    // Decide every request up front, so a seed reproduces the same traffic.
    let requests: Vec<_> = (0..plan.shape.requests)
        .map(|i| {
            let task = plan.tasks.pick(&mut rng);
            let mut body = client::body(task, &plan.corpus, &plan.photos, &mut rng);
            // Drawn only when asked for, so a seed without it sends what it always did.
            let priority = match plan.high_share > 0.0 && rng.random_bool(plan.high_share) {
                true => Priority::High,
                false => Priority::Normal,
            };
            if priority == Priority::High {
                body["priority"] = "high".into();
            }
            (i, (task, priority), body)
        })
        .collect();

    if plan.pattern == Pattern::Closed {
        let queue = Arc::new(std::sync::Mutex::new(requests.into_iter()));
        let sent = Arc::new(AtomicUsize::new(0));
        for client in 0..plan.concurrency.max(1) {
            let (http, queue, shown, sent) =
                (http(client), queue.clone(), shown.clone(), sent.clone());
            let (url, max) = (plan.url.clone(), plan.max_duration);
            jobs.spawn(async move {
                let mut out = Vec::new();
                while t0.elapsed() < max {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, task, body)) = next else { break };
                    sent.fetch_add(1, Ordering::Relaxed);
                    let r = client::send(&http, &url, i, task, body, t0).await;
                    shown.finished(&r);
                    out.push(r);
                }
                out
            });
        }
    } else {
        let offsets = traffic::schedule(plan.pattern, &plan.shape, &mut rng);
        for ((i, task, body), offset) in requests.into_iter().zip(offsets) {
            if offset > plan.max_duration {
                break;
            }
            tokio::time::sleep_until((t0 + offset).into()).await;
            let (http, shown, url) = (http(i), shown.clone(), plan.url.clone());
            jobs.spawn(async move {
                let r = client::send(&http, &url, i, task, body, t0).await;
                shown.finished(&r);
                vec![r]
            });
        }
    }
    let mut records = Vec::new();
    while let Some(done) = jobs.join_next().await {
        records.extend(done?);
    }
    shown.done();
    Ok((records, t0.elapsed()))
}
