//! A real gateway process, for tests that `kill -9` the gateway itself.

use crate::nats_server::NatsServer;
use crate::wait::wait_for;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// A real gateway process on a free port, logged in to a [`NatsServer`] with
/// its `gateway` identity; SIGKILLed on drop.
pub struct GatewayProcess {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Start the gateway binary `bin` as `id` on a free loopback port, with
    /// extra env vars, and wait (at most a minute) until `GET /healthz` is 200.
    /// Tests find `bin` beside the worker cargo built for them
    /// (`target/<profile>/gateway`); `cargo build --bins` builds it.
    pub async fn start(
        bin: impl AsRef<std::ffi::OsStr>,
        nats: &NatsServer,
        id: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let port = crate::free_port();
        let dir = tempfile::tempdir().expect("temp dir for gateway log");
        let log = dir.path().join("gateway.log");
        let file = std::fs::File::create(&log).expect("gateway log");
        let child = Command::new(bin)
            .envs(nats.env("gateway"))
            .env("GATEWAY_ID", id)
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("cannot start gateway");
        let gateway = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let healthz = format!("{}/healthz", gateway.url);
        wait_for(
            "the gateway's /healthz",
            Duration::from_secs(60),
            || async {
                let up = answers_200(&healthz).await;
                up.then_some(())
            },
        )
        .await;
        gateway
    }

    /// Base URL of its REST API.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `kill -9`: no graceful stop; the requests it holds lose their connection.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Is `GET url` answered 200? A plain HTTP/1.1 request over a TCP socket:
/// this crate carries no HTTP client.
async fn answers_200(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = tokio::net::TcpStream::connect(host).await else {
        return false;
    };
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.ends_with(b" 200")
}
