//! `loadgen bench`: the model's in-process ceiling, the end-to-end pipeline at
//! several concurrencies, and the pipeline's own overhead (echo task vs a
//! trivial axum handler), all in one run on one machine.

use crate::report::{self, Summary};
use crate::run::{self, Plan, Progress};
use crate::traffic::{Pattern, TaskMix};
use crate::trivial;
use serde::Serialize;
use std::path::PathBuf;

/// Raw model throughput at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct Raw {
    /// Sentences per forward pass.
    pub batch_size: usize,
    /// Sentences per second.
    pub sentences_per_s: f64,
}

/// End to end at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    /// Closed-loop clients.
    pub concurrency: usize,
    /// The run's summary.
    pub summary: Summary,
}

/// Everything `bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// In-process ceiling.
    pub raw: Vec<Raw>,
    /// Through gateway → NATS → workers (embed).
    pub end_to_end: Vec<EndToEnd>,
    /// Echo task through the stack.
    pub echo: Summary,
    /// Trivial axum handler, same client, same concurrency.
    pub trivial: Summary,
    /// Best end-to-end throughput ÷ best raw throughput.
    pub e2e_over_raw: f64,
    /// Echo throughput ÷ trivial handler throughput.
    pub echo_over_trivial: f64,
}

/// Measure the serving backend on `texts` at each batch size with `threads` threads.
pub fn raw(
    model_dir: &std::path::Path,
    texts: &[String],
    batch_sizes: &[usize],
    threads: usize,
) -> anyhow::Result<Vec<Raw>> {
    let measured = jetinfer_worker::bench::measure_all(
        jetinfer_worker::backend::Kind::Fast,
        model_dir,
        texts,
        batch_sizes,
        threads,
    )?;
    Ok(measured
        .into_iter()
        .map(|m| Raw {
            batch_size: m.batch_size,
            sentences_per_s: m.sentences_per_s,
        })
        .collect())
}

async fn closed(base: &Plan, url: &str, task: &str, concurrency: usize) -> anyhow::Result<Summary> {
    let plan = Plan {
        url: url.to_owned(),
        pattern: Pattern::Closed,
        concurrency,
        tasks: task.parse::<TaskMix>().map_err(anyhow::Error::msg)?,
        ..base.clone()
    };
    let (records, took) = run::execute(&plan, Progress::Quiet).await?;
    let summary = report::summarize(&records, took.as_secs_f64());
    anyhow::ensure!(
        summary.cached == 0,
        "{} of {} answers came from the gateway's answer cache, so this measures no model: \
         run the gateway with CACHE_TTL_S=0 for a benchmark",
        summary.cached,
        summary.succeeded
    );
    Ok(summary)
}

/// Run every measurement.
pub async fn bench(
    base: &Plan,
    model_dir: PathBuf,
    batch_sizes: Vec<usize>,
    threads: usize,
    concurrencies: &[usize],
) -> anyhow::Result<BenchReport> {
    let texts: Vec<String> = base
        .corpus
        .iter()
        .take(base.shape.requests)
        .cloned()
        .collect();
    println!("1/3 raw in-process model ({threads} threads) ...");
    let raw = tokio::task::spawn_blocking(move || raw(&model_dir, &texts, &batch_sizes, threads))
        .await??;
    for r in &raw {
        println!(
            "    batch {:>3}: {:>7.1} sentences/s",
            r.batch_size, r.sentences_per_s
        );
    }

    println!(
        "2/3 end to end (embed, closed loop) against {} ...",
        base.url
    );
    let mut end_to_end = Vec::new();
    for &c in concurrencies {
        let summary = closed(base, &base.url, "embed", c).await?;
        println!(
            "    concurrency {:>4}: {:>7.1} req/s  p50 {:>6.0} ms  p99 {:>6.0} ms  failed {}",
            c,
            summary.throughput_rps,
            summary.latency_ms.p50,
            summary.latency_ms.p99,
            summary.failed
        );
        end_to_end.push(EndToEnd {
            concurrency: c,
            summary,
        });
    }

    println!("3/3 pipeline overhead: echo task vs a trivial axum handler (concurrency 32) ...");
    let echo = closed(base, &base.url, "echo", 32).await?;
    let trivial_url = trivial::spawn().await?;
    let trivial = closed(base, &trivial_url, "echo", 32).await?;
    println!(
        "    echo through the stack: {:>8.1} req/s  p50 {:.1} ms",
        echo.throughput_rps, echo.latency_ms.p50
    );
    println!(
        "    trivial handler:        {:>8.1} req/s  p50 {:.1} ms",
        trivial.throughput_rps, trivial.latency_ms.p50
    );

    let best_raw = raw.iter().map(|r| r.sentences_per_s).fold(0.0, f64::max);
    let best_e2e = end_to_end
        .iter()
        .map(|e| e.summary.throughput_rps)
        .fold(0.0, f64::max);
    let report = BenchReport {
        e2e_over_raw: best_e2e / best_raw.max(f64::EPSILON),
        echo_over_trivial: echo.throughput_rps / trivial.throughput_rps.max(f64::EPSILON),
        raw,
        end_to_end,
        echo,
        trivial,
    };
    println!(
        "ratios: end-to-end / raw = {:.2}   echo / trivial = {:.3}",
        report.e2e_over_raw, report.echo_over_trivial
    );
    Ok(report)
}
