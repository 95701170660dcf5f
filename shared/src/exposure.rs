//! Protected mode, as Redis does it: a server that anyone on the network could
//! reach refuses to start without a key, unless told to accept that risk.
//!
//! Loopback listeners (127.0.0.0/8, ::1) are reachable from this machine only,
//! so they may run without keys: `./jetinfer up` and `curl localhost` work in
//! one step. Anything else (0.0.0.0, a LAN address) needs a key, or
//! `ALLOW_ANONYMOUS=true` set on purpose (containers behind a published
//! 127.0.0.1 port, a trusted network).

use std::net::SocketAddr;

/// The opt-out, flattened into the gateway's and the dashboard's command line.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ExposureArgs {
    /// Serve without any key on a non-loopback address. Off: such a server
    /// refuses to start until keys are configured. Turn it on only where
    /// something else keeps strangers out (a container whose port is
    /// published on 127.0.0.1, a private network).
    #[arg(long, env = "ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
}

/// Why a server would not start open to the network.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve {what} on {listen} without a key: anyone who can reach that address \
     could use it. Set {keys_var}=<key>[,<key>...] to require a key, listen on 127.0.0.1 only, \
     or set ALLOW_ANONYMOUS=true to accept the risk on purpose"
)]
pub struct ProtectedMode {
    /// What would have been served ("the gateway", "the dashboard").
    pub what: &'static str,
    /// The address asked for.
    pub listen: SocketAddr,
    /// The variable that configures keys for it.
    pub keys_var: &'static str,
}

impl ExposureArgs {
    /// Allow `what` to listen on `listen`: always on loopback, elsewhere only
    /// with keys (`has_keys`) or `ALLOW_ANONYMOUS`.
    pub fn check(
        &self,
        what: &'static str,
        listen: SocketAddr,
        has_keys: bool,
        keys_var: &'static str,
    ) -> Result<(), ProtectedMode> {
        if has_keys || self.allow_anonymous || listen.ip().is_loopback() {
            return Ok(());
        }
        Err(ProtectedMode {
            what,
            listen,
            keys_var,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listen: &str, has_keys: bool, allow_anonymous: bool) -> bool {
        ExposureArgs { allow_anonymous }
            .check("the gateway", listen.parse().unwrap(), has_keys, "API_KEYS")
            .is_ok()
    }

    #[test]
    fn only_loopback_may_serve_without_a_key() {
        assert!(check("127.0.0.1:8000", false, false));
        assert!(check("[::1]:8000", false, false));
        assert!(!check("0.0.0.0:8000", false, false));
        assert!(!check("[::]:8000", false, false));
        assert!(!check("192.168.1.5:8000", false, false));
        assert!(check("0.0.0.0:8000", true, false), "keys configured");
        assert!(check("0.0.0.0:8000", false, true), "risk accepted");
    }

    #[test]
    fn the_refusal_names_both_ways_out() {
        let e = ExposureArgs::default()
            .check(
                "the gateway",
                "0.0.0.0:8000".parse().unwrap(),
                false,
                "API_KEYS",
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("API_KEYS=") && e.contains("ALLOW_ANONYMOUS=true"),
            "{e}"
        );
    }
}
