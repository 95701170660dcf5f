//! Who this worker is: its id must be the name of its NATS identity, because
//! the server lets a worker write only its own heartbeat (`$KV.INFER_WORKERS.<id>`)
//! and events (`infer.event.<id>.*`). Resolved once at start, before NATS:
//!
//! - `NATS_IDENTITY_POOL`: claim a free `worker-<n>.env` from the folder
//!   (compose `--scale`); the id is the claimed name, held while we run.
//! - else `WORKER_ID`, which must match a worker login's name when both are set;
//! - else the login's name (`NATS_USER` or `NATS_IDENTITY_FILE`);
//! - else (no credentials: a server without auth) `worker-<random>`.

use crate::config::WorkerArgs;
use jetinfer_shared::config::{random_id, ConnectError};
use jetinfer_shared::identity::{pool, IdentityError, Role};

/// This worker's id, and the identity claim it must hold while it runs.
#[derive(Debug)]
pub struct WorkerIdentity {
    /// Heartbeat key, event subject token and log field.
    pub id: String,
    /// The pool claim, released when dropped (at exit).
    _claim: Option<pool::Claim>,
}

/// The worker id and its login could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum IdentityMismatch {
    /// `WORKER_ID` names another worker than the login.
    #[error("WORKER_ID {id} is not this worker's NATS identity {user}: the server lets a worker write only its own heartbeat and events (unset WORKER_ID, or log in as {id})")]
    Mismatch {
        /// `WORKER_ID`.
        id: String,
        /// The login's name.
        user: String,
    },
    /// The pool could not give an identity.
    #[error("NATS_IDENTITY_POOL: {0}")]
    Pool(#[from] IdentityError),
    /// The login's identity file could not be read.
    #[error(transparent)]
    Login(#[from] ConnectError),
}

/// Settle the id, and with a pool the login too (written into `args.nats`).
pub fn resolve(args: &mut WorkerArgs) -> Result<WorkerIdentity, IdentityMismatch> {
    let claim = match &args.nats_identity_pool {
        Some(dir) => {
            let claim = pool::claim(dir)?;
            args.nats.nats_user = Some(claim.identity.name.clone());
            args.nats.nats_password = Some(claim.identity.password.clone());
            Some(claim)
        }
        None => None,
    };
    let user = args
        .nats
        .login()?
        .map(|login| login.name)
        .filter(|u| Role::of(u) == Role::Worker);
    let id = match (&args.worker_id, user) {
        (Some(id), Some(user)) if *id != user => {
            return Err(IdentityMismatch::Mismatch {
                id: id.clone(),
                user,
            })
        }
        (Some(id), _) => id.clone(),
        (None, Some(user)) => user,
        (None, None) => random_id("worker"),
    };
    Ok(WorkerIdentity { id, _claim: claim })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jetinfer_shared::identity::{env_file, Identity};

    fn args(flags: &[&str]) -> WorkerArgs {
        WorkerArgs::parse_from(std::iter::once("worker").chain(flags.iter().copied()))
    }

    #[test]
    fn the_id_is_the_login_unless_told_otherwise() {
        let mut a = args(&["--nats-user", "worker-4", "--nats-password", "p"]);
        assert_eq!(resolve(&mut a).unwrap().id, "worker-4");
        let mut b = args(&[
            "--nats-user",
            "worker-4",
            "--nats-password",
            "p",
            "--worker-id",
            "worker-5",
        ]);
        let e = resolve(&mut b).unwrap_err().to_string();
        assert!(
            e.contains("WORKER_ID worker-5 is not this worker's NATS identity worker-4"),
            "{e}"
        );
        let mut c = args(&["--worker-id", "w9"]);
        assert_eq!(resolve(&mut c).unwrap().id, "w9");
        assert!(resolve(&mut args(&[])).unwrap().id.starts_with("worker-"));
    }

    #[test]
    fn pooled_workers_take_distinct_identities() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["worker-1", "worker-2"] {
            let id = Identity::generate(name).unwrap();
            env_file::write(&env_file::path(dir.path(), name), &id).unwrap();
        }
        let pool = dir.path().display().to_string();
        let mut a = args(&["--nats-identity-pool", &pool]);
        let mut b = args(&["--nats-identity-pool", &pool]);
        let (first, second) = (resolve(&mut a).unwrap(), resolve(&mut b).unwrap());
        assert_eq!(
            (first.id.as_str(), second.id.as_str()),
            ("worker-1", "worker-2")
        );
        assert_eq!(b.nats.nats_user.as_deref(), Some("worker-2"));
        let e = resolve(&mut args(&["--nats-identity-pool", &pool])).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
    }
}
