//! Options every service shares, as a flattened clap group.

use clap::Args;
use std::time::Duration;

/// A secret from the environment (password, API key): usable, never printed.
///
/// `Debug` and `Display` show `***`, so logging a parsed config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// How to reach NATS. Flattened into every binary's `Parser`.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user: the service's role in `nats.conf` (gateway, worker,
    /// dashboard or admin). Unset: connect without credentials.
    #[arg(long, env = "NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// Password of `NATS_USER`. Prefer the environment to the flag: flags show in `ps`.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,
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
    /// Refused credentials and permission violations are logged as errors, so
    /// a misconfigured role is visible rather than a silent stall.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, ConnectError> {
        let mut options = async_nats::ConnectOptions::new();
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        options
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::ServerError(e) => {
                        tracing::error!(error = %e, "NATS refused")
                    }
                    async_nats::Event::ClientError(e) => {
                        tracing::warn!(error = %e, "NATS client error")
                    }
                    other => tracing::debug!(event = %other, "NATS connection event"),
                }
            })
            .connect(self.nats_url.as_str())
            .await
            .map_err(|source| ConnectError {
                url: self.nats_url.clone(),
                source,
            })
    }
}
