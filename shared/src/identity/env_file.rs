//! `<name>.env`: one identity as the environment a service (or the nats CLI)
//! reads: `NATS_USER=<name>` and `NATS_PASSWORD=<password>`, mode 0600.
//! `set -a; . .state/identities/admin.env; set +a` logs a shell in.

use super::{check_name, Identity, IdentityError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file of identity `name` in `dir`.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.env"))
}

/// Read an identity file (comments and other variables are ignored).
pub fn read(path: &Path) -> Result<Identity, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<Identity, IdentityError> {
    let value = |var: &'static str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(k, _)| k.trim() == var)
            .map(|(_, v)| v.trim().to_owned())
            .ok_or(IdentityError::Incomplete {
                path: path.to_owned(),
                missing: var,
            })
    };
    let name = value("NATS_USER")?;
    check_name(&name)?;
    Ok(Identity {
        name,
        password: value("NATS_PASSWORD")?.parse().expect("infallible"),
    })
}

/// Write `identity` to `path`, readable by its owner only; written under a
/// temporary name and renamed, so a reader never sees half a file.
pub fn write(path: &Path, identity: &Identity) -> Result<(), IdentityError> {
    let text = format!(
        "# NATS identity {name} ({role:?}); written by the secrets step, mode 0600.\n\
         NATS_USER={name}\nNATS_PASSWORD={password}\n",
        name = identity.name,
        role = identity.role(),
        password = identity.password.expose(),
    );
    write_private(path, text.as_bytes())
}

/// Write `bytes` to `path` with mode 0600 (temporary file, then rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_its_file_and_only_its_owner_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate("worker-2").unwrap();
        let file = path(dir.path(), "worker-2");
        write(&file, &id).unwrap();
        assert_eq!(read(&file).unwrap(), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_file_without_a_password_is_a_clear_error() {
        let e = parse("NATS_USER=gateway\n", Path::new("g.env")).unwrap_err();
        assert!(e.to_string().contains("no NATS_PASSWORD"), "{e}");
    }
}
