//! A real nats-server per test, and the identities that log in to it.
//!
//! Each server gets fresh identities (admin, gateway, dashboard) and writes
//! its own `access.conf` beside a copy of our `nats.conf`, exactly as the
//! secrets step does for a real stack. A worker identity is made the first
//! time a test names it (`nats.env("w1")`): the server reloads its config
//! (SIGHUP) and the test goes on once the log says it did.

use crate::paths::{nats_server_bin, repo_nats_conf};
use crate::port::free_port;
use jetinfer_shared::identity::{access, tls::TlsFiles, Identity, Role};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tries at starting a cluster whose route ports were taken meanwhile.
const CLUSTER_TRIES: usize = 5;

/// What a cluster member logs once its route port is bound.
const ROUTES_LISTENING: &str = "Listening for route connections";

/// What a reloaded server logs once the new config is in force.
const RELOADED: &str = "Reloaded server configuration";

/// A nats-server child process with JetStream on, owned by one test.
pub struct NatsServer {
    child: Mutex<Option<Child>>,
    port: std::sync::atomic::AtomicU16,
    dir: tempfile::TempDir,
    /// The configuration it runs: a copy of our `nats.conf`, with overrides.
    conf: std::path::PathBuf,
    /// Every identity the server knows, in the order they were made.
    identities: Mutex<Vec<Identity>>,
    /// Whether identities are fixed at start (a cluster member).
    fixed: bool,
    /// Server certificate and CA, when clients must use TLS.
    tls: Option<TlsFiles>,
}

impl NatsServer {
    /// Start a server with our `nats.conf` on a free port, with fresh
    /// identities.
    pub fn start() -> Self {
        Self::start_with_conf("", false)
    }

    /// Start a server whose `max_payload` is `bytes` instead of our 8 MiB, to
    /// test message-size limits cheaply.
    pub fn start_with_max_payload(bytes: usize) -> Self {
        Self::start_with_conf(&format!("max_payload: {bytes}\n"), false)
    }

    /// Start a server that accepts TLS connections only, with a certificate
    /// from a fresh private CA (as `./jetinfer up --tls` makes one); every
    /// [`NatsServer::env`] then carries `NATS_TLS_CA`.
    pub fn start_tls() -> Self {
        Self::start_with_conf("", true)
    }

    /// Start `nodes` servers on loopback as one cluster (routes between all
    /// of them, each its own store, our `nats.conf` with `sync_interval:
    /// always`), sharing the identities admin, gateway, dashboard and
    /// `workers`; returns once JetStream answers on every node (a meta leader
    /// was elected). Members know only the identities they started with.
    pub async fn start_cluster(nodes: usize, workers: &[&str]) -> Vec<Self> {
        Self::start_cluster_drawing(nodes, workers, free_port).await
    }

    /// [`NatsServer::start_cluster`] with route ports from `draw`. A port is
    /// free when drawn, but a test running beside may bind it before its
    /// member does, and that member exits: then the whole cluster is started
    /// again on new ports, up to [`CLUSTER_TRIES`] times.
    async fn start_cluster_drawing(
        nodes: usize,
        workers: &[&str],
        mut draw: impl FnMut() -> u16,
    ) -> Vec<Self> {
        let identities: Vec<Identity> = ["admin", "gateway", "dashboard"]
            .iter()
            .chain(workers)
            .map(|name| Identity::generate(name).expect("identity"))
            .collect();
        let mut failures = Vec::new();
        let members = loop {
            let routes: Vec<u16> = (0..nodes).map(|_| draw()).collect();
            match Self::try_cluster(&routes, &identities) {
                Ok(members) => break members,
                Err(why) => failures.push(why),
            }
            assert!(
                failures.len() < CLUSTER_TRIES,
                "no cluster after {CLUSTER_TRIES} tries: {}",
                failures.join("\n---\n")
            );
        };
        for member in &members {
            let js = async_nats::jetstream::new(member.client().await);
            let deadline = Instant::now() + Duration::from_secs(60);
            while js.query_account().await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the cluster's JetStream did not come up: {}",
                    member.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        members
    }

    /// One member per route port, each routed to all the others; the error
    /// of the first that did not start (the members started are stopped).
    fn try_cluster(routes: &[u16], identities: &[Identity]) -> Result<Vec<Self>, String> {
        (0..routes.len())
            .map(|i| {
                let others: Vec<String> = (routes.iter().enumerate())
                    .filter(|&(j, _)| j != i)
                    .map(|(_, port)| format!("nats-route://127.0.0.1:{port}"))
                    .collect();
                let cluster = format!(
                    "server_name: n{i}\ncluster {{\n  name: jetinfer-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    routes[i],
                    others.join(", ")
                );
                let member = Self::try_start_with(&cluster, false, identities.to_vec(), true)?;
                // Its route listener starts after the ports file is written.
                member.logged(ROUTES_LISTENING)?;
                Ok(member)
            })
            .collect()
    }

    /// Our `nats.conf` followed by `overrides` (the last value of a key wins).
    fn start_with_conf(overrides: &str, tls: bool) -> Self {
        let identities = ["admin", "gateway", "dashboard"]
            .map(|name| Identity::generate(name).expect("identity"))
            .to_vec();
        Self::start_with(overrides, tls, identities, false)
    }

    /// A server with `identities`; `fixed`: no identity may be added later
    /// (a cluster member, whose peers would not know it).
    fn start_with(overrides: &str, tls: bool, identities: Vec<Identity>, fixed: bool) -> Self {
        Self::try_start_with(overrides, tls, identities, fixed)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`NatsServer::start_with`], or why the server did not start.
    fn try_start_with(
        overrides: &str,
        tls: bool,
        identities: Vec<Identity>,
        fixed: bool,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let ours = std::fs::read_to_string(repo_nats_conf()).expect("read nats.conf");
        let conf = dir.path().join("nats.conf");
        // No monitoring port; said in the config too, not only by `-m 0`:
        // a reload re-reads the file and refuses a monitoring port that changed.
        std::fs::write(&conf, format!("{ours}\nhttp_port: 0\n{overrides}"))
            .expect("write nats.conf");
        let tls = tls.then(|| {
            let files = TlsFiles::in_dir(&dir.path().join("tls"));
            files
                .create(&["localhost", "127.0.0.1"])
                .expect("TLS certificates");
            files
        });
        let server = Self {
            child: Mutex::new(None),
            port: std::sync::atomic::AtomicU16::new(0),
            dir,
            conf,
            identities: Mutex::new(identities),
            fixed,
            tls,
        };
        server.write_access();
        server.try_spawn("-1")?;
        Ok(server)
    }

    /// Write `access.conf` from the identities known now.
    fn write_access(&self) {
        let identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        let tls = self.tls.as_ref().map(|f| access::ServerTls {
            cert: &f.cert,
            key: &f.key,
        });
        let text = access::render(&identities, tls);
        std::fs::write(self.dir.path().join(access::FILE_NAME), text).expect("write access.conf");
    }

    /// The identity called `name`, made (and the server reloaded) on first use.
    /// Names other than admin, gateway and dashboard are workers'.
    pub fn identity(&self, name: &str) -> Identity {
        let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = identities.iter().find(|i| i.name == name) {
            return found.clone();
        }
        assert!(
            !self.fixed,
            "{name}: a cluster member knows only the identities it started with (name them in start_cluster)"
        );
        let made = Identity::generate(name).expect("a valid identity name");
        assert_eq!(made.role(), Role::Worker);
        identities.push(made.clone());
        drop(identities);
        self.write_access();
        self.reload();
        made
    }

    /// SIGHUP, then wait until the server logged one more reload than before.
    /// A server that is not running (killed by the test) reads the new
    /// `access.conf` when it starts again.
    fn reload(&self) {
        let before = self.log().matches(RELOADED).count();
        let pid = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.id());
        let Some(pid) = pid else {
            return;
        };
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(RELOADED).count() == before {
            assert!(
                Instant::now() < deadline,
                "nats-server did not reload: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Start the child on `port` (`-1`: a free one) and record the port it got.
    fn spawn(&self, port: &str) {
        self.try_spawn(port).unwrap_or_else(|why| panic!("{why}"));
    }

    /// [`NatsServer::spawn`], or why the child did not start.
    fn try_spawn(&self, port: &str) -> Result<(), String> {
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start nats-server");
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let port = self.read_port(&ports_dir)?;
        self.port.store(port, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The port the server wrote to its ports file; an error if it exits
    /// or takes over 20 s.
    fn read_port(&self, ports_dir: &Path) -> Result<u16, String> {
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
                return Ok(port);
            }
            self.still_starting(deadline)?;
        }
    }

    /// Wait until the log says `text`; an error if the server exits first
    /// or takes over 20 s.
    fn logged(&self, text: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(text) {
            self.still_starting(deadline)?;
        }
        Ok(())
    }

    /// Pause while a starting server may still get somewhere: an error once
    /// it has exited or `deadline` has passed.
    fn still_starting(&self, deadline: Instant) -> Result<(), String> {
        let exited = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            return Err(format!("nats-server exited with {status}: {}", self.log()));
        }
        if Instant::now() >= deadline {
            return Err(format!("nats-server did not start: {}", self.log()));
        }
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
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

    /// The password of identity `name` on this server.
    pub fn password(&self, name: &str) -> String {
        self.identity(name).password.expose().to_owned()
    }

    /// URL and credentials as the environment a service reads (`NATS_URL`,
    /// `NATS_USER`, `NATS_PASSWORD`, and `NATS_TLS_CA` on a TLS server) for
    /// identity `name`.
    pub fn env(&self, name: &str) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("NATS_URL", self.url()),
            ("NATS_USER", name.to_owned()),
            ("NATS_PASSWORD", self.password(name)),
        ];
        if let Some(tls) = &self.tls {
            env.push(("NATS_TLS_CA", tls.ca.display().to_string()));
        }
        env
    }

    /// The same as command-line flags, for parsing a service's config in-process.
    pub fn flags(&self, name: &str) -> Vec<String> {
        self.env(name)
            .into_iter()
            .flat_map(|(var, value)| [format!("--{}", var.to_lowercase().replace('_', "-")), value])
            .collect()
    }

    /// Login options of identity `name` (with the CA on a TLS server).
    pub fn options(&self, name: &str) -> async_nats::ConnectOptions {
        let ca = self.tls.as_ref().map(|tls| tls.ca.as_path());
        self.identity(name).connect_options(ca)
    }

    /// A client logged in as identity `name`; refused credentials are an error.
    pub async fn connect_as(
        &self,
        name: &str,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        self.options(name).connect(self.url()).await
    }

    /// An admin client for checks made by the test itself.
    pub async fn client(&self) -> async_nats::Client {
        self.connect_as("admin")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cluster_whose_route_port_is_taken_starts_on_other_ports() {
        // Another test's socket holds the first port drawn.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut first = Some(taken.local_addr().unwrap().port());
        let members =
            NatsServer::start_cluster_drawing(3, &[], || first.take().unwrap_or_else(free_port))
                .await;
        assert_eq!(members.len(), 3, "JetStream answers on every member");
    }
}
