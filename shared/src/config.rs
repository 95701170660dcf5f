//! Options every service shares, as a flattened clap group.

use clap::Args;
use std::time::Duration;

/// How to reach NATS. Flattened into every binary's `Parser`.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
}

/// A default instance id, `<prefix>-<8 hex digits>`: unique enough to tell
/// processes apart in logs, heartbeats and subjects, short enough to read.
pub fn random_id(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// NATS could not be reached or refused us.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {source}")]
pub struct ConnectError {
    url: String,
    #[source]
    source: async_nats::ConnectError,
}

impl NatsArgs {
    /// Connect, naming the connection after the service so `nats server report
    /// connections` tells who is who. Waits for the server to come up and
    /// reconnects forever afterwards: a NATS restart must not take services down.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, ConnectError> {
        async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .connect(self.nats_url.as_str())
            .await
            .map_err(|source| ConnectError {
                url: self.nats_url.clone(),
                source,
            })
    }
}
