//! A folder of worker identities (`worker-1.env` … `worker-<n>.env`) that
//! identical worker processes share, as `docker compose up --scale worker=5`
//! starts them: each takes the first identity no running worker holds.
//!
//! "Holds" is an exclusive `flock` on the identity's file, taken without
//! waiting and kept for the life of the process. The kernel drops it when the
//! process exits however it exits (crash, `kill -9`, OOM), so a claim can
//! never go stale, and it works across containers that mount the same volume
//! (read-only is enough: a lock is not a write).

use super::{env_file, Identity, IdentityError, Role};
use std::fs::File;
use std::path::Path;

/// A worker identity this process holds; released when dropped.
#[derive(Debug)]
pub struct Claim {
    /// The identity: its name is the worker's id.
    pub identity: Identity,
    /// The locked file: the lock lives as long as this handle.
    _lock: File,
}

/// Claim the first free worker identity in `dir`, in number order.
pub fn claim(dir: &Path) -> Result<Claim, IdentityError> {
    let io = |source| IdentityError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut workers: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| {
            let stem = path.file_stem()?.to_str()?.to_owned();
            let n = stem.strip_prefix("worker-")?.parse().ok()?;
            let is_env = path.extension().is_some_and(|e| e == "env");
            (is_env && Role::of(&stem) == Role::Worker).then_some((n, path))
        })
        .collect();
    workers.sort();
    for (_, path) in &workers {
        let file = File::open(path).map_err(|source| IdentityError::Io {
            path: path.clone(),
            source,
        })?;
        match file.try_lock() {
            Ok(()) => {
                return Ok(Claim {
                    identity: env_file::read(path)?,
                    _lock: file,
                })
            }
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(IdentityError::Io {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Err(IdentityError::PoolExhausted {
        dir: dir.to_owned(),
        count: workers.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_claim_gets_its_own_identity_until_none_is_left() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["worker-1", "worker-2", "gateway"] {
            let id = Identity::generate(name).unwrap();
            env_file::write(&env_file::path(dir.path(), name), &id).unwrap();
        }
        let a = claim(dir.path()).unwrap();
        let b = claim(dir.path()).unwrap();
        assert_eq!(a.identity.name, "worker-1");
        assert_eq!(b.identity.name, "worker-2");
        let e = claim(dir.path()).unwrap_err();
        assert!(
            matches!(e, IdentityError::PoolExhausted { count: 2, .. }),
            "{e}"
        );
        drop(a);
        assert_eq!(claim(dir.path()).unwrap().identity.name, "worker-1");
    }
}
