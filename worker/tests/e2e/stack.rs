//! A whole stack per test: a real nats-server, real workers with the real
//! model (in-process, each with its own NATS connection), and a gateway on a
//! free port.

use clap::Parser;
use jetinfer_gateway::config::GatewayArgs;
use jetinfer_testsupport::{
    image_model_dir, model_dir, wait_for, CutProxy, NatsServer, WorkerProcess,
};
use jetinfer_worker::config::WorkerArgs;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The worker binary cargo built for these tests (always current).
pub const WORKER: &str = env!("CARGO_BIN_EXE_worker");

/// The gateway binary beside the worker's, for tests that run gateway
/// processes (`cargo build --bins` builds it; `./jetinfer test` does).
pub fn gateway_bin() -> std::path::PathBuf {
    let bin = std::path::Path::new(WORKER).with_file_name("gateway");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --bins` first (`./jetinfer test` does)",
        bin.display()
    );
    bin
}

/// What a test may change about its stack.
#[derive(Debug, Default, Clone, Copy)]
pub struct Setup {
    /// The gateway reaches nats-server through a [`CutProxy`] (`gateway_link`)
    /// the test can cut; workers connect directly.
    pub cut_link: bool,
    /// nats-server's `max_payload`, instead of the 8 MiB of our `nats.conf`.
    pub max_payload: Option<usize>,
    /// nats-server accepts TLS only; every service verifies it with the CA.
    pub tls: bool,
    /// Workers serve the image model too (EfficientNet-Lite0 from
    /// `IMAGE_MODEL_DIR`); otherwise the text model only, whatever the
    /// environment says.
    pub images: bool,
}

/// A running stack; everything stops when it is dropped.
pub struct Stack {
    pub nats: NatsServer,
    pub url: String,
    pub http: reqwest::Client,
    /// The gateway's link to nats-server, when the test asked for one it can cut.
    pub gateway_link: Option<CutProxy>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    /// Start nats, `workers` workers and a gateway with extra gateway flags.
    pub async fn start(workers: usize, gateway_flags: &[&str]) -> Stack {
        Self::start_with(workers, gateway_flags, Setup::default()).await
    }

    /// As [`Stack::start`], with the non-default parts of `setup`.
    pub async fn start_with(workers: usize, gateway_flags: &[&str], setup: Setup) -> Stack {
        let nats = match (setup.max_payload, setup.tls) {
            (Some(bytes), _) => NatsServer::start_with_max_payload(bytes),
            (None, true) => NatsServer::start_tls(),
            (None, false) => NatsServer::start(),
        };
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let model = model_dir();
        for i in 0..workers {
            let mut flags = vec!["worker".to_owned()];
            flags.extend(nats.flags(&format!("w{i}")));
            flags.extend([
                "--worker-id".into(),
                format!("w{i}"),
                "--model-dir".into(),
                model.display().to_string(),
                "--threads".into(),
                "1".into(),
                "--metrics-listen".into(),
                "127.0.0.1:0".into(),
            ]);
            match setup.images {
                true => flags.extend([
                    "--image-model-dir".into(),
                    image_model_dir().display().to_string(),
                ]),
                false => flags.extend(["--models".into(), "all-minilm-l6-v2".into()]),
            }
            let args = WorkerArgs::try_parse_from(flags).expect("worker flags");
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                jetinfer_worker::run(args, stop).await.expect("worker runs");
            }));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gateway_link = match setup.cut_link {
            true => Some(CutProxy::start(nats.addr()).await),
            false => None,
        };
        let mut nats_flags = nats.flags("gateway");
        if let Some(link) = &gateway_link {
            let at = nats_flags
                .iter()
                .position(|f| f == "--nats-url")
                .expect("a URL flag");
            nats_flags[at + 1] = link.url();
        }
        let mut flags = vec!["gateway", "--gateway-id", "gw-test"];
        flags.extend(nats_flags.iter().map(String::as_str));
        flags.extend_from_slice(gateway_flags);
        let args = GatewayArgs::try_parse_from(flags).expect("gateway flags");
        {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                jetinfer_gateway::run(args, listener, stop)
                    .await
                    .expect("gateway runs");
            }));
        }
        // With `--api-keys`, the harness's own calls use the first key.
        let key = gateway_flags
            .iter()
            .position(|f| *f == "--api-keys")
            .and_then(|i| gateway_flags.get(i + 1))
            .map(|keys| keys.split(',').next().unwrap_or_default());
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = key {
            let value = format!("Bearer {key}").parse().expect("header value");
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("http client");
        let stack = Stack {
            nats,
            url,
            http,
            gateway_link,
            stop,
            tasks,
        };
        stack.wait_for_workers(workers).await;
        stack
    }

    /// GET /status as JSON.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let r = self
            .http
            .get(format!("{}/status", self.url))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Wait until `/status` lists exactly `n` live workers.
    pub async fn wait_for_workers(&self, n: usize) {
        wait_for(
            &format!("{n} workers in /status"),
            Duration::from_secs(60),
            || async {
                let status = self.status().await?;
                (status["workers"].as_array()?.len() == n).then_some(())
            },
        )
        .await;
    }

    /// GET `path` on the gateway (with the harness's key, if any) as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("gateway reachable")
            .text()
            .await
            .expect("a text body")
    }

    /// GET `path` on the gateway (with the harness's key, if any) as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("gateway reachable")
            .json()
            .await
            .expect("a JSON body")
    }

    /// POST /infer with a JSON body; returns status and parsed JSON body.
    pub async fn infer(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/infer", self.url))
            .json(&body)
            .send()
            .await
            .expect("gateway reachable");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    /// POST /infer with raw bytes and a content type.
    pub async fn infer_raw(&self, body: Vec<u8>, content_type: &str) -> (u16, serde_json::Value) {
        self.post_raw("/infer", body, content_type).await
    }

    /// POST `path` (query included) with raw bytes and a content type.
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("gateway reachable");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    /// Stop workers and gateway and wait for them.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for t in self.tasks.drain(..) {
            t.await.expect("task ended cleanly");
        }
    }
}

pub use jetinfer_testsupport::free_port;

/// Worker processes whose every forward pass takes `delay_ms` longer (the
/// delay fault), for tests that need work to be in flight a while.
pub fn slow_workers(nats: &NatsServer, names: &[&str], delay_ms: &str) -> Vec<WorkerProcess> {
    let env = [("DELAY_MIN_MS", delay_ms), ("DELAY_MAX_MS", delay_ms)];
    names
        .iter()
        .map(|name| WorkerProcess::start(WORKER, nats, name, &env))
        .collect()
}
