//! The dashboard page in a real headless Chromium (via chromedriver) against a
//! real stack: workers listed alive, counters rising, the requests table
//! filling, a killed worker's row turning dead, and NATS going away shown.

use crate::stack::{free_port, Stack, WORKER};
use fantoccini::{Client, ClientBuilder, Locator};
use jetinfer_dashboard::config::DashboardArgs;
use jetinfer_testsupport::{wait_for, Role, WorkerProcess};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(60);

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {bin}: {e}; install Chromium and its driver (`apt-get install chromium chromium-driver`; `./jetinfer test` does)")
        });
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    wait_for("chromedriver to listen", WAIT, || async {
        let r = http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    driver
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).is_file(),
        "{chromium} not found: `apt-get install chromium` (or set CHROMIUM)"
    );
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1600,1500",
                     format!("--user-data-dir={}", profile.display())]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session through chromedriver")
}

async fn count(page: &Client, css: &str) -> usize {
    page.find_all(Locator::Css(css))
        .await
        .map_or(0, |v| v.len())
}

async fn text(page: &Client, css: &str) -> Option<String> {
    page.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

fn number(s: &str) -> Option<u64> {
    s.replace(',', "").trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_live_stack_in_a_real_browser() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &["--batch-max-size", "4"]).await;

        // The dashboard starts before any worker exists (no heartbeat bucket yet).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dashboard_url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let flags = stack.nats.flags(Role::Dashboard);
        let args = <DashboardArgs as clap::Parser>::try_parse_from(
            std::iter::once("dashboard").chain(flags.iter().map(String::as_str)),
        )
        .unwrap();
        let dashboard = tokio::spawn(jetinfer_dashboard::run(args, listener, stop.clone()));

        let driver = start_driver().await;
        let profile = tempfile::tempdir().unwrap();
        let page = browser(&driver, profile.path()).await;
        page.goto(&dashboard_url).await.unwrap();
        wait_for("the empty state", WAIT, || async {
            (text(&page, "#workers-empty").await? == "no workers connected").then_some(())
        })
        .await;

        let mut workers: Vec<WorkerProcess> = (1..=3)
            .map(|i| WorkerProcess::start(WORKER, &stack.nats, &format!("w-{i}"), &[]))
            .collect();
        wait_for("three alive workers on the page", WAIT, || async {
            (count(&page, "#workers tbody tr.alive").await == 3).then_some(())
        })
        .await;

        let calls = (0..60).map(|i| {
            stack.infer(json!({"task": "embed", "input": format!("dashboard traffic {i}")}))
        });
        for (status, body) in futures::future::join_all(calls).await {
            assert_eq!(status, 200, "{body}");
        }
        wait_for("counters to rise", WAIT, || async {
            let completed = number(&text(&page, "#m-completed").await?)?;
            let submitted = number(&text(&page, "#m-submitted").await?)?;
            (completed >= 60 && submitted >= 60).then_some(())
        })
        .await;
        wait_for("the recent-requests table to fill", WAIT, || async {
            (count(&page, "#recent tbody tr").await >= 60).then_some(())
        })
        .await;
        assert!(
            count(&page, "#chart-throughput polyline").await >= 1,
            "throughput is drawn"
        );
        assert!(
            count(&page, "#chart-load rect").await == 3,
            "one load bar per worker"
        );

        // Filtering by outcome: no errors happened.
        page.find(Locator::Css("#outcome-filter"))
            .await
            .unwrap()
            .select_by_value("error")
            .await
            .unwrap();
        assert_eq!(count(&page, "#recent tbody tr").await, 0);
        page.find(Locator::Css("#outcome-filter"))
            .await
            .unwrap()
            .select_by_value("all")
            .await
            .unwrap();

        workers[0].kill();
        wait_for("the killed worker's row to turn dead", WAIT, || async {
            (count(&page, "#workers tbody tr.dead[data-worker-id='w-1']").await == 1).then_some(())
        })
        .await;
        assert_eq!(count(&page, "#workers tbody tr.alive").await, 2);
        wait_for("a lost-worker event", WAIT, || async {
            (count(&page, "#events .kind.lost").await >= 1).then_some(())
        })
        .await;

        let png = page.screenshot().await.expect("screenshot");
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&shot, &png).unwrap();
        if let Ok(path) = std::env::var("JETINFER_SCREENSHOT") {
            std::fs::write(path, &png).unwrap();
        }
        eprintln!("dashboard screenshot: {}", shot.display());

        stack.nats.kill();
        wait_for("the NATS-unreachable banner", WAIT, || async {
            text(&page, "#banner")
                .await?
                .contains("NATS unreachable")
                .then_some(())
        })
        .await;

        page.close().await.unwrap();
        stop.cancel();
        dashboard.await.unwrap().unwrap();
        drop(workers);
        stack.nats.restart();
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
