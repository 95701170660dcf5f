//! `loadgen` binary: `loadgen run …` sends traffic, `loadgen bench …` measures.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use jetinfer_loadgen::run::{Plan, Progress};
use jetinfer_loadgen::traffic::{Pattern, Shape, TaskMix};
use jetinfer_loadgen::{bench, plots, report, run};
use jetinfer_shared::corpus;
use jetinfer_shared::protocol::Task;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Traffic generator and benchmark for a jetinfer gateway.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send traffic and report every outcome.
    Run(RunArgs),
    /// Raw model vs end to end vs pipeline overhead, in one run.
    Bench(BenchArgs),
}

/// Options shared by `run` and `bench`.
#[derive(Debug, Args)]
struct Common {
    /// Gateway base URL; the only address loadgen sends to.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Requests to send (per measurement in `bench`).
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Clients of the `closed` pattern.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// No request is sent after this many seconds.
    #[arg(long, default_value_t = 120)]
    max_duration_s: u64,
    /// JSON list of input strings; default: 1024 built-in sentences of 8–20 words.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Folder of PNG and JPEG photos for `classify_image` in the task mix
    /// (`./jetinfer test` unpacks Debian's under
    /// `.state/photos/usr/lib/python3/dist-packages/skimage/data`).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Seed for the schedule, the task mix and the texts.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Per-request client timeout.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// API key for a gateway that requires one (sent as a bearer token).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Speak HTTP/2 without TLS (prior knowledge) over this many
    /// connections, requests dealt over them in turn; 0 speaks HTTP/1.1, one
    /// connection per request in flight. Keep requests in flight per
    /// connection under the gateway's `HTTP2_MAX_STREAMS` (1024).
    #[arg(long, default_value_t = 0)]
    http2_connections: usize,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Traffic pattern.
    #[arg(long, value_enum, default_value = "burst")]
    pattern: Pattern,
    /// Requests per second (sustained, poisson, mixed).
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Requests per burst (burst, mixed).
    #[arg(long, default_value_t = 100)]
    burst_size: usize,
    /// Silence between bursts.
    #[arg(long, default_value_t = 2_000)]
    burst_gap_ms: u64,
    /// Task mix with weights, e.g. `embed=3,classify=1,similarity=1`.
    #[arg(long, default_value = "embed")]
    tasks: TaskMix,
    /// Share of requests sent with `"priority": "high"` (0 to 1); the report
    /// then gives each priority's latency and their ratio.
    #[arg(long, env = "HIGH_SHARE", default_value_t = 0.0, value_parser = share)]
    high_share: f64,
    /// Print one line per request as it finishes (instead of a progress bar).
    #[arg(long)]
    per_request: bool,
    /// Write every request record and the summary to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write PNG charts into this folder.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// TrueType font for the charts (default: DejaVu Sans or Liberation Sans).
    #[arg(long)]
    font: Option<PathBuf>,
    /// Exit non-zero when the failed share of requests exceeds this.
    #[arg(long, default_value_t = 0.0)]
    max_failure_rate: f64,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    common: Common,
    /// Model folder for the in-process baseline.
    #[arg(long, env = "MODEL_DIR")]
    model_dir: PathBuf,
    /// Batch sizes of the in-process baseline.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batch_sizes: Vec<usize>,
    /// Compute threads of the in-process baseline.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Closed-loop concurrencies of the end-to-end runs.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrencies: Vec<usize>,
    /// Write the whole report to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Every PNG and JPEG directly in `dir`, base64-encoded for `/infer`.
fn photos(dir: &Path) -> anyhow::Result<Vec<String>> {
    use base64::Engine;
    let files = jetinfer_shared::image::photo_files(dir)
        .with_context(|| format!("--images {}", dir.display()))?;
    let mut photos = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
        photos.push(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    if photos.is_empty() {
        bail!("--images {}: no .png or .jpg files", dir.display());
    }
    Ok(photos)
}

/// A share: a number from 0 to 1.
fn share(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    (0.0..=1.0)
        .contains(&x)
        .then_some(x)
        .ok_or_else(|| format!("{s} is not between 0 and 1"))
}

fn plan(common: &Common, pattern: Pattern, shape: Shape, tasks: TaskMix) -> anyhow::Result<Plan> {
    let texts = corpus::load(common.corpus.as_deref())?;
    let photos = match &common.images {
        Some(dir) => photos(dir)?,
        None if tasks.sends(Task::ClassifyImage) => {
            bail!("the task mix sends classify_image: name a folder of PNG or JPEG photos with --images")
        }
        None => Vec::new(),
    };
    Ok(Plan {
        url: common.url.trim_end_matches('/').to_owned(),
        pattern,
        shape,
        concurrency: common.concurrency,
        max_duration: Duration::from_secs(common.max_duration_s),
        tasks,
        corpus: Arc::new(texts),
        photos: Arc::new(photos),
        high_share: 0.0,
        seed: common.seed,
        timeout: Duration::from_millis(common.timeout_ms),
        api_key: common.api_key.clone(),
        http2_connections: common.http2_connections,
    })
}

async fn run_cmd(a: RunArgs) -> anyhow::Result<()> {
    if a.rate.is_nan() || a.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    if a.plots.is_some() {
        plots::load_font(a.font.as_deref())?;
    }
    let shape = Shape {
        requests: a.common.requests,
        rate: a.rate,
        burst_size: a.burst_size,
        burst_gap: Duration::from_millis(a.burst_gap_ms),
    };
    let plan = Plan {
        high_share: a.high_share,
        ..plan(&a.common, a.pattern, shape, a.tasks.clone())?
    };
    println!(
        "{:?} traffic: {} requests against {}",
        a.pattern, a.common.requests, plan.url
    );
    let progress = if a.per_request {
        Progress::PerRequest
    } else {
        Progress::Bar
    };
    let (records, took) = run::execute(&plan, progress).await?;
    let summary = report::summarize(&records, took.as_secs_f64());
    report::print(&summary);
    if let Some(path) = &a.json {
        report::write_json(path, &records, &summary)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("records: {}", path.display());
    }
    if let Some(dir) = &a.plots {
        for p in plots::write_all(dir, &records, &summary)? {
            println!("plot: {}", p.display());
        }
    }
    let rate = summary.failed as f64 / summary.sent.max(1) as f64;
    if rate > a.max_failure_rate {
        bail!(
            "{:.1}% of requests failed (allowed: {:.1}%)",
            rate * 100.0,
            a.max_failure_rate * 100.0
        );
    }
    Ok(())
}

async fn bench_cmd(a: BenchArgs) -> anyhow::Result<()> {
    let shape = Shape {
        requests: a.common.requests,
        rate: 1.0,
        burst_size: 1,
        burst_gap: Duration::ZERO,
    };
    let plan = plan(
        &a.common,
        Pattern::Closed,
        shape,
        "embed".parse().map_err(anyhow::Error::msg)?,
    )?;
    let report = bench::bench(
        &plan,
        a.model_dir,
        a.batch_sizes,
        a.threads,
        &a.concurrencies,
    )
    .await?;
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        println!("report: {}", path.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(a) => run_cmd(a).await,
        Command::Bench(a) => bench_cmd(a).await,
    }
}
