//! The NATS role passwords of a local stack: generated once into the state
//! folder (mode 0600) and reused, so restarts keep working and an operator can
//! log in with the nats CLI. A password already in the environment wins.

use anyhow::Context;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The roles of `nats.conf`, each with its password variable.
const ROLES: [&str; 4] = ["admin", "gateway", "worker", "dashboard"];

/// Passwords by role.
pub struct Secrets {
    passwords: BTreeMap<&'static str, String>,
    /// The file they live in.
    pub file: PathBuf,
}

fn var(role: &str) -> String {
    format!("NATS_{}_PASSWORD", role.to_uppercase())
}

impl Secrets {
    /// Read `dir/secrets.env`, filling in (and saving) any password it lacks.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let file = dir.join("secrets.env");
        let saved = std::fs::read_to_string(&file).unwrap_or_default();
        let saved: BTreeMap<&str, &str> = saved.lines().filter_map(|l| l.split_once('=')).collect();
        let passwords = ROLES
            .into_iter()
            .map(|role| {
                let password = std::env::var(var(role))
                    .ok()
                    .or_else(|| saved.get(var(role).as_str()).map(|p| p.to_string()))
                    .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
                (role, password)
            })
            .collect();
        let secrets = Secrets { passwords, file };
        write_private(&secrets.file, secrets.server_env())?;
        Ok(secrets)
    }

    /// What nats-server needs to resolve the passwords in `nats.conf`.
    pub fn server_env(&self) -> Vec<(String, String)> {
        self.passwords
            .iter()
            .map(|(role, p)| (var(role), p.clone()))
            .collect()
    }

    /// `NATS_URL`, `NATS_USER` and `NATS_PASSWORD` for a service of `role`.
    pub fn client_env(&self, role: &str, url: &str) -> Vec<(String, String)> {
        vec![
            ("NATS_URL".into(), url.into()),
            ("NATS_USER".into(), role.into()),
            ("NATS_PASSWORD".into(), self.password(role).into()),
        ]
    }

    /// The password of `role`.
    pub fn password(&self, role: &str) -> &str {
        self.passwords.get(role).map_or("", String::as_str)
    }

    /// Write `dir/admin.env` (URL, user, password: the variables the nats CLI
    /// reads), so an operator runs `set -a; . .state/admin.env; set +a; nats stream ls`.
    pub fn write_admin_env(&self, dir: &Path, url: &str) -> anyhow::Result<PathBuf> {
        let path = dir.join("admin.env");
        write_private(&path, self.client_env("admin", url))?;
        Ok(path)
    }
}

/// Write `KEY=value` lines to a file only its owner can read.
fn write_private(path: &Path, vars: Vec<(String, String)>) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    for (k, v) in vars {
        writeln!(f, "{k}={v}")?;
    }
    Ok(())
}
