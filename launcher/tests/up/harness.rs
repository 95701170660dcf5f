//! One launcher per test: its own ports, state folder and output, stopped on drop.

use jetinfer_testsupport::{model_dir, nats_server_bin, repo_nats_conf, wait_for};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The launcher cargo built for these tests.
pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_launcher");

/// The binaries the launcher starts, beside it in `target/<profile>/`.
const SERVICES: [&str; 3] = ["worker", "gateway", "dashboard"];

/// Longest wait for a stack to come up: a debug build on a busy 2-core
/// machine loading the model.
const UP_WITHIN: Duration = Duration::from_secs(300);

/// The folder holding the launcher and, built beside it, the services.
pub fn bin_dir() -> PathBuf {
    let dir = Path::new(LAUNCHER).parent().expect("launcher folder");
    for bin in SERVICES {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: run `cargo build --bins` first (`cargo test -p jetinfer-launcher` \
             builds only the launcher; `./jetinfer test` builds every binary first)",
            dir.join(bin).display()
        );
    }
    dir.to_path_buf()
}

/// Every port a stack listens on, each free when the test started.
pub struct Ports {
    /// nats-server's client port.
    pub nats: u16,
    /// nats-server's monitoring port.
    pub monitor: u16,
    /// The first (only) worker's metrics port.
    pub metrics: u16,
    /// The gateway.
    pub gateway: u16,
    /// The dashboard.
    pub dashboard: u16,
    /// The first cluster route port (used by `--nats-cluster` only).
    pub cluster: u16,
}

impl Ports {
    /// Six distinct free ports: held open together while chosen, so none repeats.
    fn free() -> Self {
        let held: Vec<TcpListener> = (0..6)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let p: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        Self {
            nats: p[0],
            monitor: p[1],
            metrics: p[2],
            gateway: p[3],
            dashboard: p[4],
            cluster: p[5],
        }
    }

    /// Ports for a cluster of `nodes`: nats-server's client, monitoring and
    /// route ports each the first of `nodes` consecutive free ones (node i
    /// takes base + i), all free together when chosen.
    fn free_for_cluster(nodes: u16) -> Self {
        let others = Self::free();
        for _ in 0..100 {
            let base = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let Some(run) = (0..3 * nodes)
                .map(|i| base.checked_add(i))
                .collect::<Option<Vec<u16>>>()
            else {
                continue;
            };
            let held: Result<Vec<TcpListener>, _> = run
                .iter()
                .map(|p| TcpListener::bind(("127.0.0.1", *p)))
                .collect();
            if held.is_ok() && !run.contains(&others.gateway) && !run.contains(&others.dashboard) {
                return Self {
                    nats: base,
                    monitor: base + nodes,
                    cluster: base + 2 * nodes,
                    ..others
                };
            }
        }
        panic!("no run of {} free ports found", 3 * nodes);
    }

    /// Each port with its name, for assertions; the metrics port only when
    /// a worker runs.
    pub fn named(&self, workers: usize) -> Vec<(&'static str, u16)> {
        let mut all = vec![
            ("nats", self.nats),
            ("nats monitoring", self.monitor),
            ("gateway", self.gateway),
            ("dashboard", self.dashboard),
        ];
        if workers > 0 {
            all.push(("worker metrics", self.metrics));
        }
        all
    }
}

/// The launcher's command line and environment, with nothing inherited from
/// the test's environment (no stray `API_KEYS`, passwords or ports).
fn command(state: &Path, ports: &Ports, workers: usize, model: &Path, nats: &Path) -> Command {
    let mut cmd = Command::new(LAUNCHER);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--state-dir")
        .arg(state)
        .arg("--nats-server-bin")
        .arg(nats)
        .arg("--nats-conf")
        .arg(repo_nats_conf())
        .arg("--model-dir")
        .arg(model)
        .args(["--workers", &workers.to_string(), "--threads", "1"])
        .args(["--nats-port", &ports.nats.to_string()])
        .args(["--nats-monitor-port", &ports.monitor.to_string()])
        .args(["--nats-cluster-port", &ports.cluster.to_string()])
        .args(["--worker-metrics-port", &ports.metrics.to_string()])
        .args(["--gateway-port", &ports.gateway.to_string()])
        .args(["--dashboard-port", &ports.dashboard.to_string()]);
    cmd
}

/// A running launcher.
pub struct Launcher {
    child: Child,
    /// Its ports.
    pub ports: Ports,
    /// Its state folder (secrets, logs, JetStream store).
    pub state: tempfile::TempDir,
    output: Arc<Mutex<String>>,
}

impl Launcher {
    /// Start a launcher with `workers` workers (the real model) and extra
    /// flags and environment.
    pub fn start(workers: usize, flags: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on(Ports::free(), workers, flags, env)
    }

    /// Start a launcher running `nodes` nats-servers as one cluster
    /// (`--nats-cluster`), with `workers` workers.
    pub fn start_cluster(nodes: u16, workers: usize) -> Self {
        let ports = Ports::free_for_cluster(nodes);
        Self::start_on(ports, workers, &["--nats-cluster", &nodes.to_string()], &[])
    }

    fn start_on(ports: Ports, workers: usize, flags: &[&str], env: &[(&str, &str)]) -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let mut child = command(
            state.path(),
            &ports,
            workers,
            &model_dir(),
            &nats_server_bin(),
        )
        .args(flags)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the launcher");
        let output = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("stdout"), output.clone());
        collect(child.stderr.take().expect("stderr"), output.clone());
        Self {
            child,
            ports,
            state,
            output,
        }
    }

    /// What it printed so far (stdout and stderr, interleaved by line).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait until it says the stack is up; panics with its output if it exits first.
    pub async fn wait_up(&mut self) {
        let started = Instant::now();
        while !self.output().contains("jetinfer is up") {
            if let Some(status) = self.child.try_wait().expect("launcher status") {
                panic!(
                    "launcher exited ({status}) before the stack was up:\n{}",
                    self.output()
                );
            }
            assert!(
                started.elapsed() < UP_WITHIN,
                "stack not up within {UP_WITHIN:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait (at most `limit`) until the launcher exits by itself.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        let status = wait_for("the launcher to exit", limit, || {
            std::future::ready(child.try_wait().expect("launcher status"))
        })
        .await;
        // Let the output threads read what it printed last.
        tokio::time::sleep(Duration::from_millis(200)).await;
        status
    }

    /// The pid of the launcher's child running the program named `program`
    /// (`gateway`, `nats-server`), if one runs now.
    pub fn child_pid(&self, program: &str) -> Option<i32> {
        self.child_pids(program).first().copied()
    }

    /// The pids of every child of the launcher running `program`.
    pub fn child_pids(&self, program: &str) -> Vec<i32> {
        children_of(self.child.id() as i32)
            .into_iter()
            .filter(|(_, argv0)| Path::new(argv0).file_name() == Some(program.as_ref()))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The gateway's base URL.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.gateway)
    }

    /// An admin client of the stack's nats-server, with the identity the
    /// launcher wrote for operators (and its CA under `--tls`); `None` while
    /// the server is unreachable.
    pub async fn admin(&self) -> Option<async_nats::Client> {
        let file = self.state.path().join("identities/admin.env");
        let admin = jetinfer_shared::identity::env_file::read(&file).ok()?;
        let ca = self.state.path().join("tls/ca.pem");
        let options = admin.connect_options(ca.is_file().then_some(ca.as_path()));
        options
            .connect(format!("nats://127.0.0.1:{}", self.ports.nats))
            .await
            .ok()
    }
}

impl Drop for Launcher {
    /// Ctrl-C as a user would; SIGKILL (its children die with it) if it
    /// has not stopped within 30 s.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // exited already, and reaped: its pid may be another's now
        }
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Append every line `from` prints to `into`, on a thread of its own.
fn collect(from: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            let mut out = into.lock().unwrap_or_else(|e| e.into_inner());
            out.push_str(&line);
            out.push('\n');
        }
    });
}

/// Run the launcher until it exits by itself (at most 30 s), for the
/// refusals: no worker, a model folder that is never read, and no
/// nats-server program, so a launcher that gets past its checks fails at
/// once when it tries to start one.
pub async fn run_to_exit(
    flags: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Output, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state dir");
    let nats = Path::new("/nonexistent/nats-server");
    let mut cmd = command(state.path(), &Ports::free(), 0, state.path(), nats);
    cmd.args(flags).envs(env.iter().copied());
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the launcher should exit by itself within 30 s")
    .expect("run the launcher");
    (out, state)
}

/// `kill -9 pid`.
pub fn kill9(pid: i32) {
    // SAFETY: kill(2) on a pid the test just read as the launcher's child.
    let done = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(done, 0, "kill -9 {pid}");
}

/// The processes whose parent is `parent`: pid and program (`argv[0]`).
fn children_of(parent: i32) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, after_comm)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = after_comm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        found.push((pid, String::from_utf8_lossy(argv0).into_owned()));
    }
    found
}

/// The local addresses of the TCP sockets listening on `port`, IPv4 and
/// IPv6, as the kernel lists them in `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn listeners(port: u16) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // fields[1] is `ADDR:PORT` in hex, fields[3] the state; 0A = LISTEN.
            let (Some(local), Some("0A")) = (fields.get(1), fields.get(3).copied()) else {
                continue;
            };
            let Some((addr, p)) = local.split_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16) == Ok(port) {
                found.push(parse_proc_addr(addr));
            }
        }
    }
    found
}

/// An address as `/proc/net/tcp{,6}` writes it: 32-bit words in hex, each
/// in the host's byte order.
fn parse_proc_addr(hex: &str) -> IpAddr {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).expect("hex address"))
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        _ => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).expect("16 bytes"),
        )),
    }
}

#[test]
fn proc_net_addresses_are_read_in_host_byte_order() {
    assert_eq!(parse_proc_addr("0100007F").to_string(), "127.0.0.1");
    assert_eq!(parse_proc_addr("00000000").to_string(), "0.0.0.0");
    assert_eq!(
        parse_proc_addr("00000000000000000000000001000000").to_string(),
        "::1"
    );
}
