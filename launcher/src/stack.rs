//! The processes of a local stack: started in dependency order (nats-server,
//! then the workers, the gateway and the dashboard), all supervised the same
//! way while it runs (restarted when they exit, within one restart policy),
//! and stopped in the reverse order so nats-server outlives its clients.

use crate::child::{Proc, Spec};
use crate::config::{node_port, LauncherArgs};
use crate::secrets::Secrets;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a child may take to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(15);

/// How often the children are checked for an exit.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What every child is started with, resolved before the first one starts.
pub struct Plan<'a> {
    /// The command line.
    pub args: &'a LauncherArgs,
    /// NATS role passwords.
    pub secrets: &'a Secrets,
    /// Folder holding the `worker`, `gateway` and `dashboard` binaries.
    pub bin_dir: PathBuf,
    /// Folder of the children's log files.
    pub logs: PathBuf,
    /// Where the services reach nats-server.
    pub nats_url: String,
    /// Model folder every worker loads.
    pub model_dir: PathBuf,
    /// The image model's folder, when workers serve it.
    pub image_model_dir: Option<PathBuf>,
    /// Compute threads per worker.
    pub threads: usize,
    /// The lock file workers take turns with, if they do.
    pub compute_lease: Option<PathBuf>,
}

impl Plan<'_> {
    /// nats-server node `i` (from 0) with our `nats.conf` and the generated
    /// `access.conf` beside it (identities, permissions, TLS), its store in
    /// the state folder (the same on every restart, so JetStream data
    /// survives one). `-a` binds the client port to the listen host, and the
    /// monitoring port follows it: nats-server binds monitoring to the client
    /// host unless told otherwise. In a cluster each node has its own name,
    /// ports and store, and routes to every other node on loopback.
    fn nats(&self, i: usize) -> Spec {
        let args = self.args;
        let nodes = args.nats_nodes();
        let store = match nodes {
            1 => args.state_dir().join("nats"),
            _ => args.state_dir().join("nats").join(format!("n{}", i + 1)),
        };
        let mut flags: Vec<String> = vec![
            "-c".into(),
            self.secrets.nats_conf().display().to_string(),
            "-sd".into(),
            store.display().to_string(),
            "-a".into(),
            args.listen.host().to_string(),
            "-p".into(),
            node_port(args.nats_port, i).to_string(),
            "-m".into(),
            node_port(args.nats_monitor_port, i).to_string(),
        ];
        let log = match nodes {
            1 => self.logs.join("nats.log"),
            _ => {
                let route =
                    |j| format!("nats://127.0.0.1:{}", node_port(args.nats_cluster_port, j));
                let others: Vec<String> = (0..nodes).filter(|&j| j != i).map(route).collect();
                flags.extend([
                    "--server_name".into(),
                    format!("n{}", i + 1),
                    "--cluster_name".into(),
                    "jetinfer".into(),
                    "--cluster".into(),
                    route(i),
                    "--routes".into(),
                    others.join(","),
                ]);
                self.logs.join(format!("nats-{}.log", i + 1))
            }
        };
        Spec {
            program: args.nats_server_bin.clone(),
            args: flags,
            env: vec![],
            log,
        }
    }

    /// One of our binaries, logged in to NATS as its own identity `name`,
    /// configured by `env` on top of that, logging to `<name>.log`.
    fn service(&self, binary: &str, name: &str, env: Vec<(String, String)>) -> Spec {
        Spec {
            program: self.bin_dir.join(binary),
            args: vec![],
            env: [
                self.secrets.client_env(name, &self.nats_url),
                vec![(
                    "STREAM_REPLICAS".into(),
                    self.args.stream_replicas().to_string(),
                )],
                env,
            ]
            .concat(),
            log: self.logs.join(format!("{name}.log")),
        }
    }

    /// Worker `i` (from 1): its id (its identity's name), the shared model,
    /// and a metrics port of its own on the listen host.
    fn worker(&self, i: usize) -> anyhow::Result<(String, Spec)> {
        let id = format!("worker-{i}");
        let port = u16::try_from(self.args.worker_metrics_port as usize + i - 1)
            .context("WORKER_METRICS_PORT + WORKERS goes past port 65535")?;
        let mut env = vec![
            ("WORKER_ID".into(), id.clone()),
            ("MODEL_DIR".into(), self.model_dir.display().to_string()),
            ("THREADS".into(), self.threads.to_string()),
            (
                "METRICS_LISTEN".into(),
                SocketAddr::new(self.args.listen.host(), port).to_string(),
            ),
        ];
        if let Some(lease) = &self.compute_lease {
            env.push(("COMPUTE_LEASE".into(), lease.display().to_string()));
        }
        if let Some(dir) = &self.image_model_dir {
            env.push(("IMAGE_MODEL_DIR".into(), dir.display().to_string()));
        }
        let spec = self.service("worker", &id, env);
        Ok((id, spec))
    }
}

/// The running children.
pub struct Stack {
    /// The nats-server nodes: started first, stopped last.
    pub nats: Vec<Proc>,
    /// Stopped together, after the fronts.
    workers: Vec<Proc>,
    /// Gateway and dashboard: stopped first, so no new work comes in.
    fronts: Vec<Proc>,
}

impl Stack {
    /// Start nats-server (every node of a cluster) alone: the services need
    /// it reachable first.
    pub fn start_nats(plan: &Plan) -> anyhow::Result<Self> {
        let nodes = plan.args.nats_nodes();
        let nats = (0..nodes)
            .map(|i| {
                let name = match nodes {
                    1 => "nats-server".to_owned(),
                    _ => format!("nats-server n{}", i + 1),
                };
                Proc::start(&name, plan.nats(i), plan.args.restart_policy())
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            nats,
            workers: Vec::new(),
            fronts: Vec::new(),
        })
    }

    /// Start the workers, then the gateway, then the dashboard.
    pub fn start_services(&mut self, plan: &Plan) -> anyhow::Result<()> {
        let policy = plan.args.restart_policy();
        for i in 1..=plan.args.workers() {
            let (id, spec) = plan.worker(i)?;
            self.workers.push(Proc::start(&id, spec, policy)?);
        }
        let mut gateway_env = plan.args.listen.gateway_env();
        gateway_env.push(("GATEWAY_ID".into(), "gateway-1".into()));
        let gateway = plan.service("gateway", "gateway", gateway_env);
        self.fronts.push(Proc::start("gateway", gateway, policy)?);
        let dashboard = plan.service("dashboard", "dashboard", plan.args.listen.dashboard_env());
        self.fronts
            .push(Proc::start("dashboard", dashboard, policy)?);
        Ok(())
    }

    /// Run `until` (readiness, or waiting for Ctrl-C) while keeping every
    /// child alive: each one that exits is restarted by the same code path.
    /// An error, which the caller answers by stopping everything, when a
    /// child crash-loops or cannot be started again.
    pub async fn supervise<T>(&mut self, until: impl Future<Output = T>) -> anyhow::Result<T> {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tokio::pin!(until);
        loop {
            tokio::select! {
                done = &mut until => return Ok(done),
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            for child in self.children() {
                child.keep_alive(now)?;
            }
        }
    }

    /// Every child, nats-server included.
    fn children(&mut self) -> impl Iterator<Item = &mut Proc> {
        (self.nats.iter_mut())
            .chain(self.workers.iter_mut())
            .chain(self.fronts.iter_mut())
    }

    /// Stop the fronts (gateway, dashboard) and the workers, so each
    /// finishes its batch; nats-server last, so it flushes JetStream after them.
    pub async fn stop(&mut self) {
        println!("stopping ...");
        for s in self.fronts.iter_mut() {
            s.stop(GRACE).await;
        }
        futures::future::join_all(self.workers.iter_mut().map(|w| w.stop(GRACE))).await;
        futures::future::join_all(self.nats.iter_mut().map(|n| n.stop(GRACE))).await;
    }
}
