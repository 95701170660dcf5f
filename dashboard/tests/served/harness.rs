//! A dashboard on a free loopback port, stopped on drop.

use jetinfer_dashboard::config::DashboardArgs;
use jetinfer_dashboard::DashboardError;
use jetinfer_testsupport::NatsServer;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for state to show.
pub const WAIT: Duration = Duration::from_secs(20);

/// The dashboard's command line: identity `login`'s credentials on `nats`, then `flags`.
pub fn args(nats: &NatsServer, login: &str, flags: &[&str]) -> DashboardArgs {
    let login = nats.flags(login);
    let argv = std::iter::once("dashboard")
        .chain(login.iter().map(String::as_str))
        .chain(flags.iter().copied());
    <DashboardArgs as clap::Parser>::try_parse_from(argv).expect("dashboard flags")
}

/// A running dashboard.
pub struct Dashboard {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), DashboardError>>,
}

impl Dashboard {
    /// Serve with `args` on a free loopback port.
    pub async fn start(args: DashboardArgs) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(jetinfer_dashboard::run(args, listener, stop.clone()));
        Dashboard { url, stop, task }
    }

    /// Stop it and check it stopped cleanly.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().expect("dashboard ran");
    }
}

/// A client that shows redirects instead of following them, and keeps no
/// cookies: each test says which credentials a request carries.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `GET /api/snapshot` as JSON (an open dashboard).
pub async fn snapshot(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let r = http.get(format!("{url}/api/snapshot")).send().await.ok()?;
    r.json().await.ok()
}
