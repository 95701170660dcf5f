//! The processes of a local stack: started in dependency order (nats-server,
//! then the workers, the gateway and the dashboard), supervised while it runs,
//! and stopped in the reverse order so nats-server outlives its clients.

use crate::child::{Proc, Spec};
use crate::config::LauncherArgs;
use crate::secrets::Secrets;
use anyhow::bail;
use std::path::PathBuf;
use std::time::Duration;

/// How long a child may take to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(15);

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
    /// Compute threads per worker.
    pub threads: usize,
}

impl Plan<'_> {
    /// nats-server with our `nats.conf`, its store in the state folder, and
    /// the role passwords in its environment (the config reads them from there).
    fn nats(&self) -> Spec {
        let args = self.args;
        Spec {
            program: args.nats_server_bin.clone(),
            args: vec![
                "-c".into(),
                args.nats_conf.display().to_string(),
                "-sd".into(),
                args.state_dir.join("nats").display().to_string(),
                "-p".into(),
                args.nats_port.to_string(),
                "-m".into(),
                args.nats_monitor_port.to_string(),
            ],
            env: self.secrets.server_env(),
            log: self.logs.join("nats.log"),
        }
    }

    /// One of our binaries, logged in to NATS as the role of the same name,
    /// configured by `env` on top of that, logging to `<name>.log`.
    fn service(&self, binary: &str, name: &str, env: Vec<(String, String)>) -> Spec {
        Spec {
            program: self.bin_dir.join(binary),
            args: vec![],
            env: [self.secrets.client_env(binary, &self.nats_url), env].concat(),
            log: self.logs.join(format!("{name}.log")),
        }
    }

    /// Worker `i` (from 1): its id, the shared model, and a metrics port of its own.
    fn worker(&self, i: usize) -> (String, Spec) {
        let id = format!("worker-{i}");
        let metrics_port = self.args.worker_metrics_port as usize + i - 1;
        let env = vec![
            ("WORKER_ID".into(), id.clone()),
            ("MODEL_DIR".into(), self.model_dir.display().to_string()),
            ("THREADS".into(), self.threads.to_string()),
            ("METRICS_LISTEN".into(), format!("0.0.0.0:{metrics_port}")),
        ];
        let spec = self.service("worker", &id, env);
        (id, spec)
    }
}

/// The running children.
pub struct Stack {
    /// nats-server: started first, stopped last.
    pub nats: Proc,
    /// Restarted when they exit, as a container restart policy would.
    workers: Vec<Proc>,
    /// Gateway and dashboard: the stack is broken when one exits.
    services: Vec<Proc>,
}

impl Stack {
    /// Start nats-server alone: the services need it reachable first.
    pub fn start_nats(plan: &Plan) -> anyhow::Result<Self> {
        Ok(Self {
            nats: Proc::start("nats", plan.nats())?,
            workers: Vec::new(),
            services: Vec::new(),
        })
    }

    /// Start the workers, then the gateway, then the dashboard.
    pub fn start_services(&mut self, plan: &Plan) -> anyhow::Result<()> {
        for i in 1..=plan.args.workers {
            let (id, spec) = plan.worker(i);
            self.workers.push(Proc::start(&id, spec)?);
        }
        let gateway = plan.service(
            "gateway",
            "gateway",
            vec![
                ("GATEWAY_LISTEN".into(), plan.args.gateway_listen.clone()),
                ("GATEWAY_ID".into(), "gateway-1".into()),
            ],
        );
        self.services.push(Proc::start("gateway", gateway)?);
        let dashboard = plan.service(
            "dashboard",
            "dashboard",
            vec![(
                "DASHBOARD_LISTEN".into(),
                plan.args.dashboard_listen.clone(),
            )],
        );
        self.services.push(Proc::start("dashboard", dashboard)?);
        Ok(())
    }

    /// Watch the children until Ctrl-C; restart a worker that dies; give up
    /// (the caller then stops everything) if a service or nats-server dies.
    pub async fn supervise(&mut self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let signal = jetinfer_shared::shutdown::signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => return Ok(()),
                _ = tick.tick() => {}
            }
            for w in self.workers.iter_mut() {
                if let Some(status) = w.exited() {
                    println!(
                        "{} exited ({status}); restarting it (log {})",
                        w.name,
                        w.log().display()
                    );
                    w.restart()?;
                }
            }
            for p in self.services.iter_mut().chain([&mut self.nats]) {
                if let Some(status) = p.exited() {
                    bail!("{} exited ({status}); see {}", p.name, p.log().display());
                }
            }
        }
    }

    /// Stop the services (gateway, dashboard) and the workers, so each
    /// finishes its batch; nats-server last, so it flushes JetStream after them.
    pub async fn stop(&mut self) {
        println!("stopping ...");
        for s in self.services.iter_mut() {
            s.stop(GRACE).await;
        }
        futures::future::join_all(self.workers.iter_mut().map(|w| w.stop(GRACE))).await;
        self.nats.stop(GRACE).await;
    }
}
