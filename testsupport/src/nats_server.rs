//! A real nats-server per test, and the roles that log in to it.

use crate::paths::{nats_server_bin, repo_nats_conf};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A user of our `nats.conf`: each service logs in as its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Operators (nats CLI) and test checks: may do anything.
    Admin,
    /// Publishes tasks, reads its results.
    Gateway,
    /// Pulls, acks, publishes results, events and heartbeats.
    Worker,
    /// Reads only.
    Dashboard,
}

impl Role {
    /// Every role, for permission matrices.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Gateway, Role::Worker, Role::Dashboard];

    /// The user name in `nats.conf`.
    pub fn user(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Gateway => "gateway",
            Role::Worker => "worker",
            Role::Dashboard => "dashboard",
        }
    }

    /// The environment variable `nats.conf` reads this role's password from.
    pub fn password_var(self) -> String {
        format!("NATS_{}_PASSWORD", self.user().to_uppercase())
    }
}

/// A nats-server child process with JetStream on, owned by one test.
pub struct NatsServer {
    child: std::sync::Mutex<Option<Child>>,
    port: std::sync::atomic::AtomicU16,
    dir: tempfile::TempDir,
    /// The configuration it runs: our `nats.conf`, or a copy with overrides.
    conf: std::path::PathBuf,
    /// Fresh passwords per server, in `Role::ALL` order.
    passwords: [String; 4],
}

impl NatsServer {
    /// Start a server with our `nats.conf` on a free port, with a fresh
    /// random password per role.
    pub fn start() -> Self {
        Self::start_with_conf("")
    }

    /// Start a server whose `max_payload` is `bytes` instead of our 8 MiB, to
    /// test message-size limits cheaply.
    pub fn start_with_max_payload(bytes: usize) -> Self {
        Self::start_with_conf(&format!("max_payload: {bytes}\n"))
    }

    /// Our `nats.conf` followed by `overrides` (the last value of a key wins).
    fn start_with_conf(overrides: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let conf = match overrides {
            "" => repo_nats_conf(),
            _ => {
                let ours = std::fs::read_to_string(repo_nats_conf()).expect("read nats.conf");
                let path = dir.path().join("nats.conf");
                std::fs::write(&path, format!("{ours}\n{overrides}")).expect("write nats.conf");
                path
            }
        };
        let server = Self {
            child: std::sync::Mutex::new(None),
            port: std::sync::atomic::AtomicU16::new(0),
            dir,
            conf,
            passwords: Role::ALL.map(|_| uuid::Uuid::new_v4().simple().to_string()),
        };
        server.spawn("-1");
        server
    }

    /// Start the child on `port` (`-1`: a free one) and record the port it got.
    fn spawn(&self, port: &str) {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("ports dir");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.conf)
            .args(["-a", "127.0.0.1", "-p", port, "-m", "0", "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .envs(Role::ALL.map(|r| (r.password_var(), self.password(r))))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start nats-server");
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let port = self.read_port(&ports_dir);
        self.port.store(port, std::sync::atomic::Ordering::SeqCst);
    }

    /// The port the server wrote to its ports file; panics if it exits or
    /// takes over 20 s.
    fn read_port(&self, ports_dir: &Path) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let file = std::fs::read_dir(ports_dir)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .and_then(|e| std::fs::read(e.path()).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            let port = file
                .as_ref()
                .and_then(|v| v["nats"][0].as_str())
                .and_then(|url| url.rsplit(':').next())
                .and_then(|p| p.parse().ok());
            if let Some(port) = port {
                return port;
            }
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("nats-server exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Client URL.
    pub fn url(&self) -> String {
        format!(
            "nats://127.0.0.1:{}",
            self.port.load(std::sync::atomic::Ordering::SeqCst)
        )
    }

    /// Client address, for a proxy in front of the server.
    pub fn addr(&self) -> std::net::SocketAddr {
        let port = self.port.load(std::sync::atomic::Ordering::SeqCst);
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The password of `role` on this server.
    pub fn password(&self, role: Role) -> String {
        let i = Role::ALL.iter().position(|r| *r == role).expect("a role");
        self.passwords[i].clone()
    }

    /// URL and credentials as the environment a service reads (`NATS_URL`,
    /// `NATS_USER`, `NATS_PASSWORD`).
    pub fn env(&self, role: Role) -> [(&'static str, String); 3] {
        [
            ("NATS_URL", self.url()),
            ("NATS_USER", role.user().to_owned()),
            ("NATS_PASSWORD", self.password(role)),
        ]
    }

    /// The same as command-line flags, for parsing a service's config in-process.
    pub fn flags(&self, role: Role) -> Vec<String> {
        self.env(role)
            .into_iter()
            .flat_map(|(var, value)| [format!("--{}", var.to_lowercase().replace('_', "-")), value])
            .collect()
    }

    /// A client logged in as `role`; refused credentials are an error.
    pub async fn connect_as(
        &self,
        role: Role,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::with_user_and_password(role.user().into(), self.password(role))
            .connect(self.url())
            .await
    }

    /// An admin client for checks made by the test itself.
    pub async fn client(&self) -> async_nats::Client {
        self.connect_as(Role::Admin)
            .await
            .expect("connect to test nats-server as admin")
    }

    /// Kill the server hard (SIGKILL), keeping its store.
    pub fn kill(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and store, as after a crash.
    pub fn restart(&self) {
        self.kill();
        let port = self
            .port
            .load(std::sync::atomic::Ordering::SeqCst)
            .to_string();
        self.spawn(&port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
