//! Who logs in to NATS, and what each login may do.
//!
//! Every process has an identity of its own: `admin` (operators), `gateway`,
//! `dashboard`, and one per worker (`worker-1`, `worker-2`, ...), each with a
//! password. A worker's identity may write only its own heartbeat and its own
//! events, so a stolen or buggy worker cannot speak for another one. No static
//! nats-server config can say "its own" (templates exist only for JWT users),
//! so the server's user list is generated from the identities by
//! [`access::render`] into `access.conf`, which our `nats.conf` includes.
//!
//! - [`permissions`]: what each role may publish and subscribe, as data.
//! - [`access`]: the `authorization` (and `tls`) block nats-server reads.
//! - [`env_file`]: `<name>.env` files holding `NATS_USER` and `NATS_PASSWORD`.
//! - [`pool`]: a worker claims a free identity from a folder of them (compose
//!   `--scale`), held by a file lock for as long as the process lives.
//! - [`tls`]: a private CA and the server certificate, for NATS over TLS.

pub mod access;
pub mod env_file;
pub mod permissions;
pub mod pool;
pub mod tls;

use crate::config::Secret;
use std::path::Path;

/// What an identity is for; decides its permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Operators with the nats CLI: everything.
    Admin,
    /// Publishes task batches, reads its results.
    Gateway,
    /// Pulls and acks work, publishes results, its events and its heartbeat.
    Worker,
    /// Reads events, heartbeats and queue depth; changes nothing.
    Dashboard,
}

impl Role {
    /// The role of the identity called `name`: the three single identities
    /// are named after their role, every other name is a worker's.
    pub fn of(name: &str) -> Role {
        match name {
            "admin" => Role::Admin,
            "gateway" => Role::Gateway,
            "dashboard" => Role::Dashboard,
            _ => Role::Worker,
        }
    }
}

/// A login: a NATS user name and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The NATS user, also the worker id for a worker identity.
    pub name: String,
    /// Its password.
    pub password: Secret,
}

/// An identity name or file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Names become NATS subject tokens and file names.
    #[error("identity name {0:?} is not 1-64 of A-Z a-z 0-9 _ -")]
    BadName(String),
    /// An identity file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An identity file lacks `NATS_USER` or `NATS_PASSWORD`.
    #[error("{}: no {missing}=... line", path.display())]
    Incomplete {
        /// The file.
        path: std::path::PathBuf,
        /// The variable it lacks.
        missing: &'static str,
    },
    /// Every worker identity of a pool is held by a running worker.
    #[error("all {count} worker identities in {} are in use: create more (compose: WORKER_IDENTITIES=<n> docker compose up -d, then docker compose kill -s HUP nats)", dir.display())]
    PoolExhausted {
        /// The pool folder.
        dir: std::path::PathBuf,
        /// How many worker identities it has.
        count: usize,
    },
    /// Certificate generation failed.
    #[error("cannot create TLS certificates: {0}")]
    Tls(#[from] rcgen::Error),
}

impl Identity {
    /// `name` with a fresh random password (48 hex digits: 192 bits, and safe
    /// unquoted in any config or env file).
    pub fn generate(name: &str) -> Result<Identity, IdentityError> {
        check_name(name)?;
        let bytes: [u8; 24] = rand::random();
        let password = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        Ok(Identity {
            name: name.to_owned(),
            password: password.parse().expect("infallible"),
        })
    }

    /// Its role, from its name.
    pub fn role(&self) -> Role {
        Role::of(&self.name)
    }

    /// Log in as this identity, with its own reply inboxes ([`inbox_prefix`]);
    /// with `tls_ca`, over TLS verified against that CA (see [`trusting`]).
    pub fn connect_options(&self, tls_ca: Option<&Path>) -> async_nats::ConnectOptions {
        let options = async_nats::ConnectOptions::with_user_and_password(
            self.name.clone(),
            self.password.expose().to_owned(),
        )
        .custom_inbox_prefix(inbox_prefix(&self.name));
        trusting(options, tls_ca)
    }
}

/// The reply inboxes of identity `name`, `_INBOX.<name>`: the server lets
/// each identity subscribe to its own only, so no one reads the batches
/// delivered to a worker or the results and API answers sent to the gateway.
pub fn inbox_prefix(name: &str) -> String {
    format!("_INBOX.{name}")
}

/// `options`, and with `ca` also TLS required and the server verified
/// against that CA: what `NATS_TLS_CA` means for every client.
pub fn trusting(
    options: async_nats::ConnectOptions,
    ca: Option<&Path>,
) -> async_nats::ConnectOptions {
    match ca {
        Some(ca) => options
            .add_root_certificates(ca.to_owned())
            .require_tls(true),
        None => options,
    }
}

/// Names travel as subject tokens (`infer.event.<name>.*`, `$KV.INFER_WORKERS.<name>`),
/// user names and file names: keep them to characters that are safe in all three.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match ok {
        true => Ok(()),
        false => Err(IdentityError::BadName(name.to_owned())),
    }
}

/// The worker identities `worker-1` … `worker-<count>`.
pub fn worker_names(count: usize) -> impl Iterator<Item = String> {
    (1..=count).map(|i| format!("worker-{i}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_names() {
        assert_eq!(Role::of("admin"), Role::Admin);
        assert_eq!(Role::of("gateway"), Role::Gateway);
        assert_eq!(Role::of("dashboard"), Role::Dashboard);
        assert_eq!(Role::of("worker-7"), Role::Worker);
    }

    #[test]
    fn names_that_would_break_a_subject_are_refused() {
        for bad in ["", "a.b", "w*", "w>", "a b", "é", &"x".repeat(65)] {
            assert!(Identity::generate(bad).is_err(), "{bad:?}");
        }
        let id = Identity::generate("worker-1").unwrap();
        assert_eq!(id.password.expose().len(), 48);
        assert_ne!(
            id.password,
            Identity::generate("worker-1").unwrap().password
        );
    }
}
