//! loadgen's own counting, end to end over HTTP, against the trivial handler.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use jetinfer_loadgen::run::{execute, Plan, Progress};
use jetinfer_loadgen::traffic::{Pattern, Shape};
use jetinfer_loadgen::{plots, report, trivial};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

async fn plan(pattern: Pattern, requests: usize) -> Plan {
    Plan {
        url: trivial::spawn().await.unwrap(),
        pattern,
        shape: Shape {
            requests,
            rate: 200.0,
            burst_size: 10,
            burst_gap: Duration::from_millis(50),
        },
        concurrency: 4,
        max_duration: Duration::from_secs(30),
        tasks: "embed=1,echo=1".parse().unwrap(),
        corpus: Arc::new(vec!["hello".into(), "fail".into()]),
        photos: Arc::new(Vec::new()),
        high_share: 0.0,
        seed: 7,
        timeout: Duration::from_secs(10),
        api_key: None,
        http2_connections: 0,
    }
}

#[tokio::test]
async fn every_pattern_counts_every_request_once() {
    for pattern in [
        Pattern::Burst,
        Pattern::Sustained,
        Pattern::Poisson,
        Pattern::Mixed,
        Pattern::Closed,
    ] {
        let (records, took) = execute(&plan(pattern, 40).await, Progress::Quiet)
            .await
            .unwrap();
        check_counts(pattern, &records, took);
    }
}

/// `--high-share`: about that share goes as `high`, and the summary gives
/// each priority its own percentiles; without it, every request is `normal`.
#[tokio::test]
async fn a_high_share_sends_that_share_at_high_priority() {
    use jetinfer_shared::protocol::Priority;
    let mixed = Plan {
        high_share: 0.3,
        ..plan(Pattern::Closed, 300).await
    };
    let (records, took) = execute(&mixed, Progress::Quiet).await.unwrap();
    let high = records
        .iter()
        .filter(|r| r.priority == Priority::High)
        .count();
    // 90 expected; 5 standard deviations (7.9 each) either side.
    assert!((50..=130).contains(&high), "{high} of 300 high");
    let summary = report::summarize(&records, took.as_secs_f64());
    assert_eq!(summary.latency_ms_per_priority.len(), 2, "{summary:?}");
    let (records, _) = execute(&plan(Pattern::Closed, 40).await, Progress::Quiet)
        .await
        .unwrap();
    assert!(records.iter().all(|r| r.priority == Priority::Normal));
}

/// The trivial handler served over HTTP/2 only (prior knowledge), so a
/// request sent over HTTP/1.1 fails; returns its base URL.
async fn spawn_http2_only() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(trivial::app());
            tokio::spawn(http2.serve_connection(TokioIo::new(stream), service));
        }
    });
    url
}

/// Over HTTP/2 (three connections, requests dealt over them) the same
/// traffic is sent and counted the same way.
#[tokio::test]
async fn http2_connections_count_every_request_once() {
    for pattern in [Pattern::Burst, Pattern::Closed] {
        let plan = Plan {
            url: spawn_http2_only().await,
            http2_connections: 3,
            ..plan(pattern, 40).await
        };
        let (records, took) = execute(&plan, Progress::Quiet).await.unwrap();
        check_counts(pattern, &records, took);
    }
}

/// 40 requests, each recorded once; the "fail" inputs failed with a 503.
fn check_counts(pattern: Pattern, records: &[jetinfer_loadgen::client::Record], took: Duration) {
    let s = report::summarize(records, took.as_secs_f64());
    assert_eq!(s.sent, 40, "{pattern:?}");
    let indices: HashSet<usize> = records.iter().map(|r| r.index).collect();
    assert_eq!(indices.len(), 40, "{pattern:?}: each request recorded once");
    // The trivial handler fails exactly the "fail" inputs with a 503.
    assert!(s.succeeded > 0 && s.failed > 0, "{pattern:?}: {s:?}");
    assert_eq!(s.succeeded + s.failed, 40);
    assert_eq!(
        s.failures_by_reason.get("unavailable"),
        Some(&s.failed),
        "{s:?}"
    );
    assert_eq!(s.per_worker.get("trivial"), Some(&s.succeeded));
    let l = s.latency_ms;
    assert!(
        l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max,
        "{l:?}"
    );
}

#[tokio::test]
async fn the_same_seed_sends_the_same_traffic() {
    let run = || async {
        let (mut records, _) = execute(&plan(Pattern::Burst, 30).await, Progress::Quiet)
            .await
            .unwrap();
        records.sort_by_key(|r| r.index);
        records
            .iter()
            .map(|r| (r.task, r.outcome.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run().await, run().await);
}

#[tokio::test]
async fn plots_are_written_as_png() {
    let (records, took) = execute(&plan(Pattern::Burst, 30).await, Progress::Quiet)
        .await
        .unwrap();
    let s = report::summarize(&records, took.as_secs_f64());
    plots::load_font(None).expect("a font (fonts-dejavu-core)");
    let dir = tempfile::tempdir().unwrap();
    let written = plots::write_all(dir.path(), &records, &s).unwrap();
    assert_eq!(written.len(), 4);
    for p in written {
        let bytes = std::fs::read(&p).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", p.display());
        assert!(bytes.len() > 5_000, "{} has content", p.display());
    }
}
