//! The dashboard's command line.

use clap::Parser;
use jetinfer_shared::config::NatsArgs;
use jetinfer_shared::serve::ServeArgs;
use jetinfer_shared::telemetry::LogArgs;
use std::net::SocketAddr;

/// Serve a live, read-only view of a jetinfer stack, fed only from NATS.
#[derive(Debug, Clone, Parser)]
#[command(name = "dashboard", version, about)]
pub struct DashboardArgs {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Connection limits of the HTTP front.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Address the page is served on.
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// Workers' heartbeat period; a worker is shown dead after three missed beats.
    #[arg(long, env = "HEARTBEAT_INTERVAL_MS", default_value_t = 1_000)]
    pub heartbeat_interval_ms: u64,
    /// Finished requests kept for the requests table.
    #[arg(long, env = "DASHBOARD_RECENT", default_value_t = 200)]
    pub recent: usize,
}
