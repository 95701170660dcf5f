//! Options every service shares, as a flattened clap group.

use crate::identity::{self, Identity};
use clap::Args;
use std::path::PathBuf;
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
    /// NATS server URL(s), comma separated: the servers of a cluster (or some
    /// of them; the client learns the others from the cluster) between which
    /// the connection fails over.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user: the service's own identity (gateway, dashboard, admin, or a
    /// worker's name such as worker-1; see docs/SECURITY.md). Unset: connect
    /// without credentials.
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// Password of `NATS_USER`. Prefer the environment to the flag: flags show in `ps`.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,
    /// File holding the password of `NATS_USER` (a trailing newline is
    /// ignored), instead of `NATS_PASSWORD`: for secrets mounted as files
    /// (docker compose's init volume, Kubernetes secrets), so no password
    /// sits in an environment.
    #[arg(long, env = "NATS_PASSWORD_FILE", conflicts_with = "nats_password")]
    pub nats_password_file: Option<PathBuf>,
    /// An identity file (`NATS_USER=...` and `NATS_PASSWORD=...` lines, as the
    /// secrets step writes `<name>.env`) instead of the three options above:
    /// for compose's secrets volume, so no password sits in an environment.
    #[arg(long, env = "NATS_IDENTITY_FILE", conflicts_with_all = ["nats_user", "nats_password", "nats_password_file"])]
    pub nats_identity_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS server with; set, the
    /// connection must be TLS (`./jetinfer up --tls` writes
    /// `.state/tls/ca.pem`). Unset: plain TCP, or TLS verified against the
    /// system's roots when the server requires it.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
}

/// A default instance id, `<prefix>-<8 hex digits>`: unique enough to tell
/// processes apart in logs, heartbeats and subjects, short enough to read.
pub fn random_id(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// NATS could not be reached or refused us, or our credentials are incomplete.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connection itself failed.
    #[error("cannot connect to NATS at {url}: {source}")]
    Server {
        /// `NATS_URL`.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
    /// An entry of `NATS_URL` is not a server address.
    #[error("NATS_URL: {entry:?} is not a NATS server URL ({source}); expected nats://host:port, several comma separated")]
    Url {
        /// The entry.
        entry: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `NATS_PASSWORD_FILE` could not be read.
    #[error("cannot read NATS_PASSWORD_FILE {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A user without a password, or a password without a user.
    #[error(
        "NATS_USER and one of NATS_PASSWORD / NATS_PASSWORD_FILE go together: set both or neither"
    )]
    HalfCredentials,
    /// `NATS_IDENTITY_FILE` could not be used.
    #[error("NATS_IDENTITY_FILE: {0}")]
    IdentityFile(#[from] identity::IdentityError),
    /// `NATS_TLS_CA` names no file.
    #[error("NATS_TLS_CA {}: no such file (the CA certificate the server's certificate is checked against)", .0.display())]
    TlsCa(PathBuf),
}

impl NatsArgs {
    /// Connect, naming the connection after the service so `nats server report
    /// connections` tells who is who, with [`NatsArgs::options`]. Refused
    /// credentials and permission violations are logged as errors, so a
    /// misconfigured role is visible rather than a silent stall.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, ConnectError> {
        let options = self
            .options()?
            .name(name)
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
            });
        self.connect_with(options).await
    }

    /// The login and the reconnect policy every connection uses: wait for the
    /// server to come up and reconnect forever afterwards (a NATS restart must
    /// not take services down). For a caller that needs its own event callback.
    pub fn options(&self) -> Result<async_nats::ConnectOptions, ConnectError> {
        let ca = self.nats_tls_ca.as_deref();
        if let Some(ca) = ca.filter(|ca| !ca.is_file()) {
            return Err(ConnectError::TlsCa(ca.to_owned()));
        }
        let options = match self.login()? {
            Some(identity) => identity.connect_options(ca),
            None => identity::trusting(async_nats::ConnectOptions::new(), ca),
        };
        Ok(options
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5)))
    }

    /// Who this service logs in as: the identity in `NATS_IDENTITY_FILE`, or
    /// `NATS_USER` with its password; `None` without credentials. A worker's
    /// id must be its login's name: the server lets it write only its own
    /// heartbeat and events.
    pub fn login(&self) -> Result<Option<Identity>, ConnectError> {
        if let Some(file) = &self.nats_identity_file {
            return Ok(Some(identity::env_file::read(file)?));
        }
        match (&self.nats_user, self.password()?) {
            (Some(user), Some(password)) => Ok(Some(Identity {
                name: user.clone(),
                password,
            })),
            (None, None) => Ok(None),
            _ => Err(ConnectError::HalfCredentials),
        }
    }

    /// The servers `NATS_URL` lists, comma separated (blanks around each
    /// are ignored). async-nats reads a string as one URL, so a list given
    /// to it whole was refused as "invalid port number".
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, ConnectError> {
        self.nats_url
            .split(',')
            .map(str::trim)
            .map(|entry| {
                // async-nats takes an empty address, then waits for ever on
                // a server it cannot name (an unset variable, `NATS_URL=`).
                let empty = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty");
                let parsed = match entry.is_empty() {
                    true => Err(empty()),
                    false => entry.parse(),
                };
                parsed.map_err(|source| ConnectError::Url {
                    entry: entry.to_owned(),
                    source,
                })
            })
            .collect()
    }

    /// Connect to the servers of `NATS_URL` with `options` (from [`NatsArgs::options`]).
    pub async fn connect_with(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::Client, ConnectError> {
        options
            .connect(self.servers()?)
            .await
            .map_err(|source| ConnectError::Server {
                url: self.nats_url.clone(),
                source,
            })
    }

    /// The password: `NATS_PASSWORD`, or the contents of `NATS_PASSWORD_FILE`
    /// without its trailing newline.
    pub fn password(&self) -> Result<Option<Secret>, ConnectError> {
        let Some(path) = &self.nats_password_file else {
            return Ok(self.nats_password.clone());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConnectError::PasswordFile {
            path: path.clone(),
            source,
        })?;
        Ok(Some(Secret(text.trim_end_matches(['\n', '\r']).to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
    }

    #[test]
    fn a_password_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let cli = Cli::parse_from(
            ["t", "--nats-user", "worker", "--nats-password-file"]
                .into_iter()
                .map(String::from)
                .chain([file.display().to_string()]),
        );
        assert_eq!(cli.nats.password().unwrap().unwrap().expose(), "s3cret");
    }

    #[test]
    fn a_missing_password_file_is_a_clear_error() {
        let cli = Cli::parse_from(["t", "--nats-password-file", "/nonexistent/pw"]);
        let e = cli.nats.password().unwrap_err().to_string();
        assert!(e.contains("NATS_PASSWORD_FILE /nonexistent/pw"), "{e}");
    }

    #[test]
    fn nats_url_lists_servers_comma_separated() {
        let cli = Cli::parse_from([
            "t",
            "--nats-url",
            "nats://127.0.0.1:4222, nats://127.0.0.1:4223,127.0.0.1:4224",
        ]);
        let ports: Vec<u16> = (cli.nats.servers().unwrap().iter())
            .map(|s| s.port())
            .collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        let bad = Cli::parse_from(["t", "--nats-url", "nats://127.0.0.1:4222,nats://h:port"]);
        let e = bad.nats.servers().unwrap_err().to_string();
        assert!(
            e.contains("\"nats://h:port\" is not a NATS server URL"),
            "{e}"
        );
        for empty in ["", "nats://127.0.0.1:4222,"] {
            let cli = Cli::parse_from(["t", "--nats-url", empty]);
            let e = cli.nats.servers().unwrap_err().to_string();
            assert!(e.contains("\"\" is not a NATS server URL (empty)"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_list_with_a_dead_server_fails_over_to_a_live_one() {
        let nats = jetinfer_testsupport::NatsServer::start();
        let dead_url = format!("nats://127.0.0.1:{}", jetinfer_testsupport::free_port());
        let mut flags = nats.flags("admin");
        let url = flags.iter().position(|f| f == "--nats-url").unwrap() + 1;
        flags[url] = format!("{dead_url},{}", nats.url());
        let cli = Cli::parse_from(std::iter::once("t".to_owned()).chain(flags));
        let client = cli.nats.connect("test").await.expect("connect");
        tokio::time::timeout(Duration::from_secs(30), client.flush())
            .await
            .expect("connected within 30 s")
            .expect("flush");
    }

    #[test]
    fn password_and_password_file_conflict() {
        let both = Cli::try_parse_from(["t", "--nats-password", "a", "--nats-password-file", "/f"]);
        assert!(both.is_err());
    }
}
