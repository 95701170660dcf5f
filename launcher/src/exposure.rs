//! Where the stack listens, and who may use it there.
//!
//! Loopback by default: `./jetinfer up` on a laptop or a shared server exposes
//! nothing to the network, yet `curl localhost` works in one step. `--public`
//! (or `LISTEN_HOST=0.0.0.0`) opens every listener — gateway, dashboard,
//! nats-server and its monitoring, worker metrics — and then the launcher
//! refuses to start without `API_KEYS`, as the gateway and the dashboard
//! themselves do (protected mode, [`jetinfer_shared::exposure`]): refusing
//! here says so before anything is started, instead of as a crash loop.

use anyhow::Context;
use jetinfer_shared::config::Secret;
use jetinfer_shared::exposure::ExposureArgs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The listen addresses and the keys that guard them.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// Address every listener binds: gateway, dashboard, nats-server (clients
    /// and monitoring) and the workers' metrics. Loopback by default, so only
    /// this machine reaches the stack.
    #[arg(long, env = "LISTEN_HOST", default_value = "127.0.0.1")]
    pub listen_host: IpAddr,
    /// Listen on every interface (0.0.0.0), whatever `LISTEN_HOST` says; the
    /// stack then needs `API_KEYS` (or `ALLOW_ANONYMOUS=true`).
    #[arg(long, env = "PUBLIC")]
    pub public: bool,
    /// Gateway port on `LISTEN_HOST`.
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 8000)]
    pub gateway_port: u16,
    /// Dashboard port on `LISTEN_HOST`.
    #[arg(long, env = "DASHBOARD_PORT", default_value_t = 3000)]
    pub dashboard_port: u16,
    /// Gateway listen address, overriding `LISTEN_HOST` and `GATEWAY_PORT`.
    #[arg(long, env = "GATEWAY_LISTEN")]
    pub gateway_listen: Option<SocketAddr>,
    /// Dashboard listen address, overriding `LISTEN_HOST` and `DASHBOARD_PORT`.
    #[arg(long, env = "DASHBOARD_LISTEN")]
    pub dashboard_listen: Option<SocketAddr>,
    /// The gateway's API keys, comma separated (passed on as its `API_KEYS`),
    /// and the dashboard's unless `DASHBOARD_KEYS` is set. Required when the
    /// gateway or the dashboard listens beyond loopback. Prefer the
    /// environment to the flag: flags show in `ps`.
    #[arg(long, env = "API_KEYS", hide_env_values = true)]
    pub api_keys: Option<Secret>,
    /// The dashboard's keys, comma separated; default: `API_KEYS`.
    #[arg(long, env = "DASHBOARD_KEYS", hide_env_values = true)]
    pub dashboard_keys: Option<Secret>,
    /// Serving without keys beyond loopback, passed on to gateway and dashboard.
    #[command(flatten)]
    pub anonymous: ExposureArgs,
}

/// A key list that holds at least one key: an empty `API_KEYS=` means open,
/// as it does for the gateway.
fn keys(secret: &Option<Secret>) -> Option<&str> {
    secret
        .as_ref()
        .map(Secret::expose)
        .filter(|k| !k.trim().is_empty())
}

/// Where a process on this machine reaches a listener bound to `ip`: a
/// wildcard address is reached through loopback, any other through itself.
pub fn local(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(v6) if v6.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        other => other,
    }
}

impl ListenArgs {
    /// The host every listener binds: 0.0.0.0 with `--public`, else `LISTEN_HOST`.
    pub fn host(&self) -> IpAddr {
        match self.public {
            true => Ipv4Addr::UNSPECIFIED.into(),
            false => self.listen_host,
        }
    }

    /// The gateway's address: `GATEWAY_LISTEN`, or the host and `GATEWAY_PORT`.
    pub fn gateway(&self) -> SocketAddr {
        self.gateway_listen
            .unwrap_or_else(|| SocketAddr::new(self.host(), self.gateway_port))
    }

    /// The dashboard's address: `DASHBOARD_LISTEN`, or the host and `DASHBOARD_PORT`.
    pub fn dashboard(&self) -> SocketAddr {
        self.dashboard_listen
            .unwrap_or_else(|| SocketAddr::new(self.host(), self.dashboard_port))
    }

    /// Refuse a gateway or dashboard reachable from the network without keys,
    /// unless `ALLOW_ANONYMOUS` accepts that on purpose. Only the HTTP fronts
    /// are checked: nats-server always requires its role passwords.
    pub fn check(&self) -> anyhow::Result<()> {
        let dashboard_keys = keys(&self.dashboard_keys).or(keys(&self.api_keys));
        let fronts = [
            (
                "the gateway",
                "GATEWAY_LISTEN",
                self.gateway(),
                keys(&self.api_keys),
            ),
            (
                "the dashboard",
                "DASHBOARD_LISTEN",
                self.dashboard(),
                dashboard_keys,
            ),
        ];
        for (what, var, listen, keys) in fronts {
            // API_KEYS is named for both: the launcher gives it to each.
            self.anonymous
                .check(what, listen, keys.is_some(), "API_KEYS")
                .with_context(|| {
                    format!(
                        "not starting: the stack would be reachable from the network \
                         (--public, LISTEN_HOST or {var})"
                    )
                })?;
        }
        Ok(())
    }

    /// The gateway's environment: its address, keys and opt-out.
    pub fn gateway_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("GATEWAY_LISTEN".into(), self.gateway().to_string())];
        if let Some(keys) = keys(&self.api_keys) {
            env.push(("API_KEYS".into(), keys.into()));
        }
        env.extend(self.anonymous_env());
        env
    }

    /// The dashboard's environment: its address, keys (`API_KEYS` unless
    /// `DASHBOARD_KEYS` is set) and opt-out.
    pub fn dashboard_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("DASHBOARD_LISTEN".into(), self.dashboard().to_string())];
        if let Some(keys) = keys(&self.dashboard_keys).or(keys(&self.api_keys)) {
            env.push(("DASHBOARD_KEYS".into(), keys.into()));
        }
        env.extend(self.anonymous_env());
        env
    }

    /// `ALLOW_ANONYMOUS=true` when it was given, also as `--allow-anonymous`
    /// (a flag the children would not inherit by themselves).
    fn anonymous_env(&self) -> Option<(String, String)> {
        self.anonymous
            .allow_anonymous
            .then(|| ("ALLOW_ANONYMOUS".into(), "true".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        listen: ListenArgs,
    }

    /// Parse `flags` alone: the test's own environment must not leak in.
    fn parse(flags: &[&str]) -> ListenArgs {
        for var in [
            "LISTEN_HOST",
            "PUBLIC",
            "GATEWAY_PORT",
            "DASHBOARD_PORT",
            "GATEWAY_LISTEN",
            "DASHBOARD_LISTEN",
            "API_KEYS",
            "DASHBOARD_KEYS",
            "ALLOW_ANONYMOUS",
        ] {
            assert!(
                std::env::var_os(var).is_none(),
                "unset {var} to run these tests"
            );
        }
        Cli::try_parse_from([&["launcher"], flags].concat())
            .expect("flags parse")
            .listen
    }

    fn env_of(env: &[(String, String)], var: &str) -> Option<String> {
        env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
    }

    #[test]
    fn everything_listens_on_loopback_by_default() {
        let l = parse(&[]);
        assert_eq!(l.gateway().to_string(), "127.0.0.1:8000");
        assert_eq!(l.dashboard().to_string(), "127.0.0.1:3000");
        l.check().expect("loopback needs no key");
        assert_eq!(env_of(&l.gateway_env(), "API_KEYS"), None);
        assert_eq!(env_of(&l.gateway_env(), "ALLOW_ANONYMOUS"), None);
    }

    #[test]
    fn public_opens_every_front_and_then_needs_keys() {
        let l = parse(&["--public", "--gateway-port", "8100"]);
        assert_eq!(l.host().to_string(), "0.0.0.0");
        assert_eq!(l.gateway().to_string(), "0.0.0.0:8100");
        assert_eq!(l.dashboard().to_string(), "0.0.0.0:3000");
        let e = format!("{:#}", l.check().unwrap_err());
        assert!(
            e.contains("API_KEYS=") && e.contains("ALLOW_ANONYMOUS=true"),
            "{e}"
        );
        assert!(e.contains("the gateway on 0.0.0.0:8100"), "{e}");
    }

    #[test]
    fn one_exposed_front_is_enough_to_need_keys() {
        let l = parse(&["--dashboard-listen", "0.0.0.0:3000"]);
        let e = format!("{:#}", l.check().unwrap_err());
        assert!(e.contains("the dashboard on 0.0.0.0:3000"), "{e}");
        assert!(e.contains("DASHBOARD_LISTEN"), "{e}");
    }

    #[test]
    fn keys_reach_gateway_and_dashboard() {
        let l = parse(&["--public", "--api-keys", "k1,k2"]);
        l.check().expect("keys given");
        assert_eq!(
            env_of(&l.gateway_env(), "API_KEYS").as_deref(),
            Some("k1,k2")
        );
        assert_eq!(
            env_of(&l.dashboard_env(), "DASHBOARD_KEYS").as_deref(),
            Some("k1,k2")
        );
        let own = parse(&["--public", "--api-keys", "k1", "--dashboard-keys", "d"]);
        assert_eq!(
            env_of(&own.dashboard_env(), "DASHBOARD_KEYS").as_deref(),
            Some("d")
        );
    }

    #[test]
    fn empty_keys_are_no_keys() {
        let l = parse(&["--public", "--api-keys", " "]);
        assert!(l.check().is_err());
        assert_eq!(env_of(&l.gateway_env(), "API_KEYS"), None);
    }

    #[test]
    fn allow_anonymous_opens_without_keys_and_is_passed_on() {
        let l = parse(&["--public", "--allow-anonymous"]);
        l.check().expect("risk accepted");
        for env in [l.gateway_env(), l.dashboard_env()] {
            assert_eq!(env_of(&env, "ALLOW_ANONYMOUS").as_deref(), Some("true"));
        }
    }

    #[test]
    fn a_wildcard_is_reached_through_loopback() {
        assert_eq!(local("0.0.0.0".parse().unwrap()).to_string(), "127.0.0.1");
        assert_eq!(local("::".parse().unwrap()).to_string(), "::1");
        assert_eq!(local("10.1.2.3".parse().unwrap()).to_string(), "10.1.2.3");
    }
}
