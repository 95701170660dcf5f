//! `jetinfer-top`: the dashboard in a terminal, for operators on a server
//! over SSH. It starts the same feeds as the page ([`crate::watch`]), so it
//! needs only a NATS login that may read what the dashboard reads, and it
//! survives NATS going away and coming back the same way (the header says
//! `NATS disconnected` meanwhile; the numbers are the last ones seen).
//!
//! - [`rows`]: the tables, as text cells, shared by both outputs;
//! - [`screen`]: the live view (ratatui): keys `1` overview, `2` events,
//!   `3` requests, `q` (or Esc, Ctrl-C) to quit;
//! - [`text`]: `--once`, one plain-text snapshot for scripts and CI.

pub mod rows;
pub mod screen;
pub mod text;

use crate::watch::Watch;
use jetinfer_shared::config::NatsArgs;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The command line of `jetinfer-top`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "jetinfer-top",
    version,
    about = "The jetinfer dashboard in a terminal: workers, queue, throughput, latency, events, recent requests, live from NATS"
)]
pub struct TopArgs {
    /// How to reach NATS (the dashboard's login is enough).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Print one plain-text snapshot and exit (for scripts and CI).
    #[arg(long)]
    pub once: bool,
    /// With `--once`: how long to listen before printing, in ms (every
    /// worker heartbeats and every gateway reports once a second).
    #[arg(long, env = "TOP_GATHER_MS", default_value_t = 2_500)]
    pub gather_ms: u64,
    /// How often the screen is redrawn, in ms.
    #[arg(long, env = "TOP_REFRESH_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..))]
    pub refresh_ms: u64,
    /// The workers' heartbeat interval: a worker is shown dead three
    /// intervals after its last heartbeat.
    #[arg(long, env = "HEARTBEAT_INTERVAL_MS", default_value_t = 1_000)]
    pub heartbeat_interval_ms: u64,
    /// Finished requests kept for the requests view.
    #[arg(long, env = "DASHBOARD_RECENT", default_value_t = 200)]
    pub recent: usize,
}

/// Why `jetinfer-top` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// NATS options were unusable.
    #[error(transparent)]
    Connect(#[from] jetinfer_shared::config::ConnectError),
    /// NATS did not answer in time for `--once`.
    #[error("NATS did not answer within {0:?}")]
    Unreachable(Duration),
    /// `--once` gathered nothing: the login was refused or no server answered.
    #[error("not connected to NATS (state: {0}): is the stack up, and the login right?")]
    NotConnected(String),
    /// The terminal could not be driven.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Run `jetinfer-top` until the user quits (or, with `--once`, print one
/// snapshot).
pub async fn run(args: TopArgs) -> Result<(), TopError> {
    let stop = CancellationToken::new();
    let gather = Duration::from_millis(args.gather_ms);
    let client = match args.once {
        // A script must not wait for ever on a NATS that is not there.
        true => tokio::time::timeout(gather + CONNECT_WAIT, args.nats.connect("jetinfer-top"))
            .await
            .map_err(|_| TopError::Unreachable(gather + CONNECT_WAIT))??,
        false => args.nats.connect("jetinfer-top").await?,
    };
    let ttl = Duration::from_millis(args.heartbeat_interval_ms * 3);
    let watch = std::sync::Arc::new(Watch::start(client, args.recent, ttl, stop.clone()));
    let result = match args.once {
        true => {
            tokio::time::sleep(gather).await;
            let snapshot = watch.snapshot();
            print!("{}", text::render(&snapshot));
            // A script must not take an empty snapshot for an idle stack.
            match snapshot.nats.as_str() {
                "connected" => Ok(()),
                state => Err(TopError::NotConnected(state.to_owned())),
            }
        }
        false => {
            let refresh = Duration::from_millis(args.refresh_ms);
            // The screen blocks on the terminal; the feeds go on meanwhile.
            let watch = watch.clone();
            tokio::task::spawn_blocking(move || screen::run(&watch, refresh))
                .await
                .map_err(std::io::Error::other)?
                .map_err(TopError::from)
        }
    };
    stop.cancel();
    result
}

/// How long `--once` waits for NATS beyond its gathering time.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
