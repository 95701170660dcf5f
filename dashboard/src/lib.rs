//! jetinfer dashboard: a live, read-only view of the stack, fed only from NATS.
//!
//! It subscribes to task, result and event subjects, watches the heartbeat
//! bucket and reads consumer info; it never publishes to a work subject, acks
//! or deletes anything. The browser gets one JSON snapshot per second over
//! Server-Sent Events.
//!
//! # Layout
//! - [`config`]: the command line.
//! - [`state`]: what the dashboard knows about the stack, how it ages, and
//!   the snapshot the page renders (one file per concept under `state/`).
//! - [`feed`]: NATS subscriptions, KV watch, queue polling and the ageing
//!   timer → state.
//! - [`server`]: the page, its assets, `/api/snapshot` and the SSE stream.

pub mod config;
pub mod feed;
pub mod server;
pub mod state;

use config::DashboardArgs;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the dashboard stopped.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// NATS options were unusable.
    #[error(transparent)]
    Connect(#[from] jetinfer_shared::config::ConnectError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serve the dashboard on `listener` until `stop` fires. NATS may come and go:
/// the page says so and the feed resumes by itself.
pub async fn run(
    args: DashboardArgs,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), DashboardError> {
    let client = args.nats.connect("dashboard").await?;
    let ttl = Duration::from_millis(args.heartbeat_interval_ms * 3);
    let stack = Arc::new(Mutex::new(state::StackState::new(args.recent, ttl)));
    feed::spawn(client.clone(), stack.clone(), stop.clone());
    let state = Arc::new(server::AppState { stack, client });
    tracing::info!(listen = %listener.local_addr()?, "dashboard ready");
    jetinfer_shared::serve::serve(listener, server::app(state), args.serve, stop).await?;
    Ok(())
}
