//! The dashboard page in a real headless Chromium (via chromedriver) against a
//! real stack: the login form, workers listed alive, counters rising, the
//! requests table filling without request text, a killed worker's row
//! turning dead, and NATS going away shown. And, over plain HTTP, that no
//! request text reaches the dashboard by default.

use crate::stack::{free_port, Stack, WORKER};
use fantoccini::{Client, ClientBuilder, Locator};
use jetinfer_dashboard::config::DashboardArgs;
use jetinfer_dashboard::DashboardError;
use jetinfer_testsupport::{wait_for, WorkerProcess};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(60);
/// The dashboard's key in these tests.
const KEY: &str = "dashboard-e2e-key";

/// A dashboard in this process, fed by `stack`'s NATS, with `flags`.
struct Dashboard {
    url: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), DashboardError>>,
}

impl Dashboard {
    async fn start(stack: &Stack, flags: &[&str]) -> Dashboard {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let login = stack.nats.flags("dashboard");
        let argv = std::iter::once("dashboard")
            .chain(login.iter().map(String::as_str))
            .chain(flags.iter().copied());
        let args = <DashboardArgs as clap::Parser>::try_parse_from(argv).unwrap();
        let task = tokio::spawn(jetinfer_dashboard::run(args, listener, stop.clone()));
        Dashboard { url, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

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

/// Click the element `css` selects.
async fn click(page: &Client, css: &str) {
    page.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Type `key` into the login form and send it.
async fn log_in(page: &Client, key: &str) {
    let field = page.wait().for_element(Locator::Css("#key")).await.unwrap();
    field.send_keys(key).await.unwrap();
    click(page, "#login button").await;
}

fn number(s: &str) -> Option<u64> {
    s.replace(',', "").trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_live_stack_in_a_real_browser() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &["--batch-max-size", "4"]).await;

        // The dashboard starts before any worker exists (no heartbeat bucket yet).
        let dashboard = Dashboard::start(&stack, &["--keys", KEY]).await;

        let driver = start_driver().await;
        let profile = tempfile::tempdir().unwrap();
        let page = browser(&driver, profile.path()).await;
        page.goto(&dashboard.url).await.unwrap();
        log_in(&page, "not-the-key").await;
        wait_for("a refused login", WAIT, || async {
            (count(&page, "#login-refused").await == 1).then_some(())
        })
        .await;
        assert_eq!(count(&page, "#workers").await, 0, "nothing shown");
        log_in(&page, KEY).await;
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
        assert_eq!(text(&page, "#m-dead").await.as_deref(), Some("0"));
        // Garbage on a task subject is kept as a dead letter, and counted.
        let js = async_nats::jetstream::new(stack.nats.client().await);
        js.publish("infer.task.all-minilm-l6-v2.embed.normal", "garbage".into())
            .await
            .unwrap()
            .await
            .unwrap();
        wait_for("one dead letter on the page", WAIT, || async {
            (number(&text(&page, "#m-dead").await?)? == 1).then_some(())
        })
        .await;
        wait_for("the recent-requests table to fill", WAIT, || async {
            (count(&page, "#recent tbody tr").await >= 60).then_some(())
        })
        .await;
        let source = page.source().await.unwrap();
        assert!(
            !source.contains("dashboard traffic"),
            "request text on the page"
        );
        let input = text(&page, "#recent tbody tr td:nth-child(8)").await;
        assert!(
            input.as_deref().is_some_and(|t| t.contains(" chars · #")),
            "an input is shown as its length and hash: {input:?}"
        );
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

        // Logging out ends the session: the form is back.
        click(&page, ".logout button").await;
        wait_for("the login form after logout", WAIT, || async {
            (count(&page, "#login").await == 1).then_some(())
        })
        .await;

        page.close().await.unwrap();
        dashboard.stop().await;
        drop(workers);
        stack.nats.restart();
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

/// Request text never reaches the dashboard by default: a unique canary
/// sent through every task shows in no snapshot taken while the requests
/// are pending or after they finished, and in no event of the live stream.
/// Over HTTP, the data answers 401 without the key and 200 with it as a
/// bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_text_never_reaches_the_dashboard_by_default() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(1, &[]).await;
        let dashboard = Dashboard::start(&stack, &["--keys", KEY]).await;
        let http = reqwest::Client::new();
        let url = |path: &str| format!("{}{path}", dashboard.url);
        for path in ["/api/snapshot", "/api/stream"] {
            let r = http.get(url(path)).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} without a key");
        }
        let bearer = format!("Bearer {KEY}");
        let snapshot = || async {
            let r = http
                .get(url("/api/snapshot"))
                .header("authorization", &bearer)
                .send()
                .await
                .ok()?;
            assert_eq!(r.status(), 200);
            r.text().await.ok()
        };
        wait_for("the worker on the dashboard", WAIT, || async {
            let s: serde_json::Value = serde_json::from_str(&snapshot().await?).ok()?;
            (s["workers"].as_array()?.len() == 1).then_some(())
        })
        .await;

        // Everything the dashboard says while the traffic runs.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut live = http
            .get(url("/api/stream"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(live.status(), 200);
        let listen = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok(Some(chunk)) = live.chunk().await {
                    seen.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk));
                }
            }
        });
        let traffic_done = CancellationToken::new();
        let poll = async {
            while !traffic_done.is_cancelled() {
                if let Some(s) = snapshot().await {
                    seen.lock().unwrap().push_str(&s);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };

        let canary = format!("canary{}", uuid::Uuid::new_v4().simple());
        let bodies = (0..5).flat_map(|i| {
            [
                json!({"task": "embed", "input": format!("{canary} embed {i}")}),
                json!({"task": "similarity", "input": {"query": format!("{canary} query {i}"),
                       "candidates": [format!("{canary} candidate {i}"), "other"]}}),
                json!({"task": "classify", "input": format!("{canary} classify {i}"),
                       "labels": [format!("{canary} label {i}"), "other"]}),
                json!({"task": "echo", "input": format!("{canary} echo {i}")}),
            ]
        });
        let send = async {
            let answers = futures::future::join_all(bodies.map(|b| stack.infer(b))).await;
            for (status, body) in answers {
                assert_eq!(status, 200, "{body}");
            }
            wait_for("the 20 requests on the dashboard", WAIT, || async {
                let s: serde_json::Value = serde_json::from_str(&snapshot().await?).ok()?;
                (s["recent"].as_array()?.len() >= 20).then_some(())
            })
            .await;
            tokio::time::sleep(Duration::from_millis(1500)).await; // one more stream event
            traffic_done.cancel();
        };
        futures::join!(poll, send);
        listen.abort();

        let seen = seen.lock().unwrap().clone();
        assert!(seen.contains("event: snapshot"), "the stream was read");
        assert!(
            seen.contains("\"input_hash\""),
            "finished requests were seen"
        );
        assert!(!seen.contains(&canary), "request text on the dashboard");
        dashboard.stop().await;
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
