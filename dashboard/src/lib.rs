//! jetinfer dashboard: a live, read-only view of the stack, fed only from NATS.
//!
//! It subscribes to result and event subjects, watches the heartbeat bucket
//! and reads consumer info; it never publishes to a work subject, acks or
//! deletes anything. The browser gets one JSON snapshot per second over
//! Server-Sent Events. Request text stays out of it unless
//! `DASHBOARD_SHOW_INPUTS` is on, and with keys configured only those who
//! log in see any of it.
//!
//! # Layout
//! - [`config`]: the command line.
//! - [`state`]: what the dashboard knows about the stack, how it ages, and
//!   the snapshot the page renders (one file per concept under `state/`).
//! - [`feed`]: NATS subscriptions, KV watch, queue polling and the ageing
//!   timer → state; `feed/previews.rs` reads the task subjects, opt-in.
//! - [`server`]: the page, its assets, `/api/snapshot` and the SSE stream.
//! - [`access`]: keys, the login form and sessions in front of the server.
//! - [`watch`]: the feeds' state behind one handle, read by the server and
//!   by [`top`].
//! - [`top`]: `jetinfer-top`, the same view in a terminal (ratatui), and
//!   `--once`, a plain-text snapshot for scripts.

pub mod access;
pub mod config;
pub mod feed;
pub mod server;
pub mod state;
pub mod top;
pub mod watch;

use config::DashboardArgs;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the dashboard stopped.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// Asked to listen beyond loopback with no key (protected mode).
    #[error(transparent)]
    Exposed(#[from] jetinfer_shared::exposure::ProtectedMode),
    /// NATS options were unusable.
    #[error(transparent)]
    Connect(#[from] jetinfer_shared::config::ConnectError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serve the dashboard on `listener` until `stop` fires. NATS may come and go:
/// the page says so and the feed resumes by itself. Refuses to start open to
/// the network: on a non-loopback address without keys, unless
/// `ALLOW_ANONYMOUS`.
pub async fn run(
    args: DashboardArgs,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), DashboardError> {
    let listen = listener.local_addr()?;
    let access = access::Access::new(args.effective_keys(), args.session_ttl());
    args.exposure
        .check("the dashboard", listen, access.enabled(), "DASHBOARD_KEYS")?;
    let client = args.nats.connect("dashboard").await?;
    let ttl = Duration::from_millis(args.heartbeat_interval_ms * 3);
    let watch = watch::Watch::start(client, args.recent, ttl, stop.clone());
    if args.show_inputs {
        feed::previews::spawn(args.nats.clone(), watch.stack(), stop.clone());
    }
    tracing::info!(%listen, keys = access.enabled(), show_inputs = args.show_inputs, "dashboard ready");
    let state = Arc::new(server::AppState {
        watch,
        stop: stop.clone(),
    });
    let app = access::protect(server::app(state), access);
    jetinfer_shared::serve::serve(listener, app, args.serve, stop).await?;
    Ok(())
}
