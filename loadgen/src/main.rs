//! `loadgen`: N concurrent requests against a gateway, then the same texts
//! through the model in-process, so the end-to-end figures come with their
//! ceiling measured in the same run on the same machine.

use anyhow::Context;
use clap::Parser;
use jetinfer_worker::backend::bert::BertEmbedder;
use jetinfer_worker::backend::Embedder;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Load a jetinfer gateway and compare it with the raw model.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Args {
    /// Gateway base URL (only this URL is targeted).
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Requests to send in total.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 300)]
    concurrency: usize,
    /// Per-request client timeout.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// Also run the same texts through the model in-process (the ceiling).
    #[arg(long, env = "MODEL_DIR")]
    baseline_model_dir: Option<PathBuf>,
    /// Batch size of the in-process baseline.
    #[arg(long, default_value_t = 32)]
    baseline_batch: usize,
    /// Compute threads of the in-process baseline.
    #[arg(long, default_value_t = 2)]
    baseline_threads: usize,
}

const WORDS: [&str; 24] = [
    "the", "quick", "system", "answers", "every", "request", "with", "a", "vector", "while",
    "workers", "pull", "batches", "from", "the", "queue", "and", "nothing", "is", "lost", "during",
    "heavy", "bursty", "traffic",
];

/// Deterministic sentences of 8–20 words.
fn corpus(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let len = 8 + (i * 7) % 13;
            let words: Vec<&str> = (0..len)
                .map(|j| WORDS[(i * 5 + j * 3) % WORDS.len()])
                .collect();
            format!("{i}: {}", words.join(" "))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Outcome {
    status: u16,
    latency_ms: f64,
    worker: Option<String>,
    retries: u64,
}

async fn one(http: &reqwest::Client, url: &str, text: &str) -> Outcome {
    let started = Instant::now();
    let body = serde_json::json!({"task": "embed", "input": text});
    let response = http.post(format!("{url}/infer")).json(&body).send().await;
    let (status, json) = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
        Err(_) => (0, serde_json::Value::Null),
    };
    Outcome {
        status,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        worker: json["worker_id"].as_str().map(str::to_owned),
        retries: json["retries"].as_u64().unwrap_or(0),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let texts = corpus(args.requests);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;

    println!(
        "end to end: {} embed requests, {} concurrent, against {}",
        args.requests, args.concurrency, args.url
    );
    let started = Instant::now();
    let outcomes: Vec<Outcome> = {
        use futures::StreamExt;
        futures::stream::iter(texts.iter().map(|t| one(&http, &args.url, t)))
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await
    };
    let wall = started.elapsed().as_secs_f64();
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 200).collect();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        *by_status.entry(o.status).or_default() += 1;
        if let Some(w) = &o.worker {
            *by_worker.entry(w.clone()).or_default() += 1;
        }
    }
    let mut lat: Vec<f64> = ok.iter().map(|o| o.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let e2e_rps = ok.len() as f64 / wall;
    println!(
        "  answered {}/{} ok in {wall:.2}s, by status {by_status:?}",
        ok.len(),
        outcomes.len()
    );
    println!("  retried {}", ok.iter().filter(|o| o.retries > 0).count());
    println!("  throughput {e2e_rps:.1} req/s");
    println!(
        "  latency ms: p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}",
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 100.0)
    );
    println!("  per worker {by_worker:?}");

    if let Some(dir) = args.baseline_model_dir {
        let model = BertEmbedder::load(&dir, "baseline".into()).context("load baseline model")?;
        let pool = rayon_pool(args.baseline_threads)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let batch = args.baseline_batch.max(1);
        let started = Instant::now();
        pool.install(|| -> anyhow::Result<()> {
            for chunk in refs.chunks(batch) {
                model.embed(chunk)?;
            }
            Ok(())
        })?;
        let raw_rps = texts.len() as f64 / started.elapsed().as_secs_f64();
        println!(
            "raw in-process: {raw_rps:.1} sentences/s (batch {batch}, {} threads)",
            args.baseline_threads
        );
        println!("ratio end-to-end / raw = {:.2}", e2e_rps / raw_rps);
    }
    Ok(())
}

fn rayon_pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()?)
}
