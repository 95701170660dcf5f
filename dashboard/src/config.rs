//! The dashboard's command line.

use clap::Parser;
use jetinfer_shared::config::{NatsArgs, Secret};
use jetinfer_shared::exposure::ExposureArgs;
use jetinfer_shared::serve::ServeArgs;
use jetinfer_shared::telemetry::LogArgs;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// Address the page is served on. Loopback by default: on any other
    /// address the dashboard refuses to start without keys (`DASHBOARD_KEYS`
    /// or `API_KEYS`) unless `ALLOW_ANONYMOUS=true`.
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Protected mode's opt-out.
    #[command(flatten)]
    pub exposure: ExposureArgs,
    /// Keys that open the dashboard, comma separated: people log in with one
    /// on the page's form, scripts send `Authorization: Bearer <key>` to
    /// `/api/*`. Unset or empty: the gateway's `API_KEYS` are used, so one
    /// secret opens both.
    #[arg(
        long,
        env = "DASHBOARD_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub keys: Vec<Secret>,
    /// The gateway's API keys: the dashboard's keys when `DASHBOARD_KEYS` is
    /// unset. Neither set: the dashboard is open, which protected mode allows
    /// on loopback only.
    #[arg(long, env = "API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<Secret>,
    /// Seconds a login lasts. The session lives in this process only, so a
    /// restart logs everyone out as well.
    #[arg(long, env = "DASHBOARD_SESSION_TTL_S", default_value_t = 12 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_ttl_s: u64,
    /// Show request text (input previews of pending and finished requests).
    /// Off: a finished request shows only its length and a short hash, and
    /// the task subjects, which carry every input, are not read at all. For
    /// development: the dashboard's NATS role must also be allowed to
    /// subscribe to `infer.task.>`, which our `nats.conf` does not grant.
    #[arg(long, env = "DASHBOARD_SHOW_INPUTS")]
    pub show_inputs: bool,
    /// Workers' heartbeat period; a worker is shown dead after three missed beats.
    #[arg(long, env = "HEARTBEAT_INTERVAL_MS", default_value_t = 1_000)]
    pub heartbeat_interval_ms: u64,
    /// Finished requests kept for the requests table.
    #[arg(long, env = "DASHBOARD_RECENT", default_value_t = 200)]
    pub recent: usize,
}

impl DashboardArgs {
    /// The keys in force: `DASHBOARD_KEYS` when it names any, else `API_KEYS`.
    /// Empty entries never count, so `DASHBOARD_KEYS=""` falls back too.
    pub fn effective_keys(&self) -> Vec<Secret> {
        let named = |keys: &[Secret]| -> Vec<Secret> {
            keys.iter()
                .filter(|k| !k.expose().is_empty())
                .cloned()
                .collect()
        };
        let own = named(&self.keys);
        if own.is_empty() {
            named(&self.api_keys)
        } else {
            own
        }
    }

    /// How long a login lasts.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> DashboardArgs {
        DashboardArgs::try_parse_from(std::iter::once("dashboard").chain(args.iter().copied()))
            .unwrap()
    }

    fn keys(args: &DashboardArgs) -> Vec<String> {
        args.effective_keys()
            .iter()
            .map(|k| k.expose().to_owned())
            .collect()
    }

    #[test]
    fn the_dashboards_keys_win_over_the_gateways() {
        assert_eq!(keys(&parse(&["--api-keys", "g1,g2"])), ["g1", "g2"]);
        assert_eq!(keys(&parse(&["--keys", "d", "--api-keys", "g"])), ["d"]);
        assert_eq!(keys(&parse(&["--keys", ",", "--api-keys", "g"])), ["g"]);
        assert!(keys(&parse(&[])).is_empty());
    }

    #[test]
    fn defaults_are_private_and_local() {
        let args = parse(&[]);
        assert!(args.listen.ip().is_loopback());
        assert!(!args.show_inputs);
        assert!(!args.exposure.allow_anonymous);
        assert!(parse(&["--show-inputs"]).show_inputs);
    }
}
