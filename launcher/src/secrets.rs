//! The secrets step: every NATS identity of a stack (admin, gateway,
//! dashboard, worker-1 … worker-N), the nats-server config made from them,
//! and with `--tls` a private CA and the server certificate. Kept across runs
//! (restarts keep working, the nats CLI keeps its login), created when
//! missing, all replaced with `--rotate`. The same code serves `./jetinfer up`
//! (`.state/`), `./jetinfer secrets` and compose's init service (the
//! `secrets` volume).
//!
//! ```text
//! <dir>/identities/<name>.env   NATS_USER + NATS_PASSWORD, 0600 (compose: owned by the service's user)
//! <dir>/nats-server/nats.conf   our nats.conf, copied
//! <dir>/nats-server/access.conf users, permissions (and tls), 0600: nats-server only
//! <dir>/tls/{ca,server-cert,server-key}.pem   with --tls
//! ```

use anyhow::Context;
use jetinfer_shared::identity::{access, env_file, tls::TlsFiles, worker_names, Identity, Role};
use std::path::{Path, PathBuf};

/// What the secrets step is asked to make.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretsArgs {
    /// Folder of the identities, the nats-server config and the certificates.
    #[arg(long = "state-dir", env = "STATE_DIR", default_value = ".state")]
    pub dir: PathBuf,
    /// Worker identities to have: worker-1 … worker-<n> (compose: a pool that
    /// `--scale worker=<m>` draws from, m ≤ n).
    #[arg(long, env = "WORKERS", default_value_t = 3)]
    pub workers: usize,
    /// Our nats-server config, copied beside the generated access.conf.
    #[arg(long, env = "NATS_CONF", default_value = "nats.conf")]
    pub nats_conf: PathBuf,
    /// NATS over TLS: make a private CA and a server certificate (kept like
    /// the passwords), and make nats-server accept TLS connections only.
    #[arg(long, env = "NATS_TLS")]
    pub tls: bool,
    /// Names the server certificate is valid for, comma separated.
    #[arg(
        long,
        env = "NATS_TLS_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1,nats"
    )]
    pub tls_hosts: Vec<String>,
}

/// The secrets command: the step alone, for operators and compose's init.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretsCommand {
    /// What to make.
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// Replace every password (and, with TLS, the CA and certificate). A
    /// running stack keeps the old ones until it is restarted.
    #[arg(long)]
    pub rotate: bool,
    /// Give each identity file to the user of its service, `jetinfer-<role>`
    /// (compose's image has them; admin stays root's). Needs root.
    #[arg(long, env = "SECRETS_OWNERS")]
    pub owners: bool,
}

/// The identities of a stack, on disk.
pub struct Secrets {
    identities: Vec<Identity>,
    dir: PathBuf,
    tls: Option<TlsFiles>,
}

impl Secrets {
    /// Load what `args.dir` has, make what is missing (everything with
    /// `rotate`), and write the nats-server config.
    pub fn prepare(args: &SecretsArgs, rotate: bool) -> anyhow::Result<Self> {
        let ids = args.dir.join("identities");
        create_dir(&ids, 0o755)?;
        let mut names: Vec<String> = ["admin", "gateway", "dashboard"]
            .into_iter()
            .map(String::from)
            .chain(worker_names(args.workers))
            .collect();
        // Worker identities made for an earlier, bigger --workers stay valid.
        for entry in std::fs::read_dir(&ids)?.flatten() {
            let path = entry.path();
            let name = path.file_stem().and_then(|s| s.to_str()).map(String::from);
            if let Some(name) = name.filter(|_| path.extension().is_some_and(|e| e == "env")) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let mut identities = Vec::new();
        for name in &names {
            let file = env_file::path(&ids, name);
            let kept = match rotate {
                true => None,
                false => env_file::read(&file).ok().filter(|i| i.name == *name),
            };
            let identity = match kept {
                Some(identity) => identity,
                None => {
                    let made = Identity::generate(name)?;
                    env_file::write(&file, &made)?;
                    made
                }
            };
            identities.push(identity);
        }
        let tls = match args.tls {
            false => None,
            true => {
                let files = TlsFiles::in_dir(&args.dir.join("tls"));
                if rotate || !files.exist() {
                    let hosts: Vec<&str> = args.tls_hosts.iter().map(String::as_str).collect();
                    files.create(&hosts)?;
                }
                Some(files)
            }
        };
        let secrets = Secrets {
            identities,
            dir: args.dir.clone(),
            tls,
        };
        secrets.write_server_config(&args.nats_conf)?;
        Ok(secrets)
    }

    /// `nats-server/nats.conf` (ours, copied) and `access.conf` beside it.
    fn write_server_config(&self, ours: &Path) -> anyhow::Result<()> {
        let dir = self.dir.join("nats-server");
        create_dir(&dir, 0o755)?;
        let base = std::fs::read_to_string(ours)
            .with_context(|| format!("cannot read the nats-server config {}", ours.display()))?;
        let tls = self.tls.as_ref().map(|f| access::ServerTls {
            cert: &f.cert,
            key: &f.key,
        });
        let text = access::render(&self.identities, tls);
        env_file::write_private(&dir.join(access::FILE_NAME), text.as_bytes())?;
        std::fs::write(dir.join("nats.conf"), base)
            .with_context(|| format!("cannot write {}", dir.display()))?;
        Ok(())
    }

    /// The config nats-server starts with.
    pub fn nats_conf(&self) -> PathBuf {
        self.dir.join("nats-server").join("nats.conf")
    }

    /// The file of identity `name`.
    pub fn identity_file(&self, name: &str) -> PathBuf {
        env_file::path(&self.dir.join("identities"), name)
    }

    /// Identity `name`, which [`Secrets::prepare`] made.
    pub fn identity(&self, name: &str) -> anyhow::Result<&Identity> {
        self.identities
            .iter()
            .find(|i| i.name == name)
            .with_context(|| format!("no NATS identity {name}"))
    }

    /// The CA clients verify the server with, under `--tls`.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|f| f.ca.as_path())
    }

    /// How a service logs in as `name`: `NATS_URL`, `NATS_IDENTITY_FILE` (no
    /// password in its environment) and, under TLS, `NATS_TLS_CA`.
    pub fn client_env(&self, name: &str, url: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("NATS_URL".into(), url.into()),
            (
                "NATS_IDENTITY_FILE".into(),
                self.identity_file(name).display().to_string(),
            ),
        ];
        if let Some(ca) = self.tls_ca() {
            env.push(("NATS_TLS_CA".into(), ca.display().to_string()));
        }
        env
    }

    /// Give each identity file to `jetinfer-<role>` (admin: root), for
    /// compose's one-user-per-service image.
    pub fn chown_to_services(&self) -> anyhow::Result<()> {
        for identity in &self.identities {
            let user = match identity.role() {
                Role::Admin => "root".to_owned(),
                Role::Gateway => "jetinfer-gateway".to_owned(),
                Role::Worker => "jetinfer-worker".to_owned(),
                Role::Dashboard => "jetinfer-dashboard".to_owned(),
            };
            let (uid, gid) = lookup_user(&user)?;
            let file = self.identity_file(&identity.name);
            std::os::unix::fs::chown(&file, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {} to {user}", file.display()))?;
        }
        Ok(())
    }

    /// Every identity's name, for the summary.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.identities.iter().map(|i| i.name.as_str())
    }
}

/// `user`'s uid and gid from the password database.
fn lookup_user(user: &str) -> anyhow::Result<(u32, u32)> {
    let name = std::ffi::CString::new(user)?;
    // SAFETY: getpwnam reads a NUL-terminated name; the returned record is
    // read at once, before any other passwd call on this thread.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    anyhow::ensure!(!entry.is_null(), "no user {user} on this system");
    // SAFETY: non-null, points at libc's static passwd record.
    let entry = unsafe { &*entry };
    Ok((entry.pw_uid, entry.pw_gid))
}

/// `mkdir -p` with `mode` on the last folder.
fn create_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// `launcher secrets`: run the step alone and say what is where.
pub fn run(command: &SecretsCommand) -> anyhow::Result<()> {
    let secrets = Secrets::prepare(&command.secrets, command.rotate)?;
    if command.owners {
        secrets.chown_to_services()?;
    }
    let ids = command.secrets.dir.join("identities");
    let names: Vec<&str> = secrets.names().collect();
    println!(
        "{} NATS identities in {}/ ({})",
        if command.rotate { "rotated" } else { "ready:" },
        ids.display(),
        names.join(", ")
    );
    println!("nats-server config: {}", secrets.nats_conf().display());
    if let Some(ca) = secrets.tls_ca() {
        println!(
            "TLS: clients verify the server with NATS_TLS_CA={}",
            ca.display()
        );
    }
    println!(
        "nats CLI as admin: set -a; . {}; set +a; nats stream ls",
        secrets.identity_file("admin").display()
    );
    if command.rotate {
        println!(
            "a running stack still uses the old ones: restart it (Ctrl-C, then ./jetinfer up)"
        );
    }
    Ok(())
}
