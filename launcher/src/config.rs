//! The launcher's command line, and the values derived from it once.

use crate::exposure::{local, ListenArgs};
use crate::restart::RestartPolicy;
use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Run nats-server, the workers, the gateway and the dashboard locally until
/// Ctrl-C, restarting any of them that dies.
#[derive(Debug, Parser)]
#[command(name = "launcher", version, about)]
pub struct LauncherArgs {
    /// Number of workers.
    #[arg(long, env = "WORKERS", default_value_t = 3)]
    pub workers: usize,
    /// Compute threads per worker; default: cores ÷ workers, at least 1.
    #[arg(long, env = "THREADS")]
    pub threads: Option<usize>,
    /// Folder for JetStream data and logs.
    #[arg(long, env = "STATE_DIR", default_value = ".state")]
    pub state_dir: PathBuf,
    /// nats-server program.
    #[arg(long, env = "NATS_SERVER_BIN", default_value = "nats-server")]
    pub nats_server_bin: PathBuf,
    /// nats-server config file.
    #[arg(long, env = "NATS_CONF", default_value = "nats.conf")]
    pub nats_conf: PathBuf,
    /// NATS client port.
    #[arg(long, env = "NATS_PORT", default_value_t = 4222)]
    pub nats_port: u16,
    /// NATS monitoring port.
    #[arg(long, env = "NATS_MONITOR_PORT", default_value_t = 8222)]
    pub nats_monitor_port: u16,
    /// Port of the first worker's `GET /metrics`; worker N listens on this + N − 1.
    #[arg(long, env = "WORKER_METRICS_PORT", default_value_t = 9101)]
    pub worker_metrics_port: u16,
    /// Listen addresses, and the keys required beyond loopback.
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Restarts a child gets within `RESTART_WINDOW_S` before the stack
    /// stops as a crash loop; 0: the first exit of any child stops it.
    #[arg(long, env = "MAX_RESTARTS", default_value_t = 5)]
    pub max_restarts: usize,
    /// The window, in seconds, in which `MAX_RESTARTS` are counted.
    #[arg(long, env = "RESTART_WINDOW_S", default_value_t = 60)]
    pub restart_window_s: u64,
    /// Model folder; when unset, workers' `--fetch-model` downloads it by `MODEL_ID`.
    #[arg(long, env = "MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Folder holding the `worker`, `gateway` and `dashboard` binaries; default: next to this one.
    #[arg(long, env = "BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

impl LauncherArgs {
    /// `--bin-dir`, or the launcher's own folder: `cargo build` puts every
    /// binary of the workspace side by side, so the services found are the
    /// ones built with this launcher.
    pub fn bin_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.bin_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(std::env::current_exe()?
                .parent()
                .context("launcher has no parent folder")?
                .to_path_buf()),
        }
    }

    /// Folder of every child's log file, inside the state folder so one
    /// `rm -r .state` resets a stack completely.
    pub fn logs(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// How every child reaches nats-server: on this machine, through
    /// loopback when the server listens on every interface.
    pub fn nats_url(&self) -> String {
        let at = SocketAddr::new(local(self.listen.host()), self.nats_port);
        format!("nats://{at}")
    }

    /// The restart policy of every child.
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            max_restarts: self.max_restarts,
            window: Duration::from_secs(self.restart_window_s),
        }
    }

    /// The machine's cores and the compute threads each worker gets: `--threads`,
    /// or an even share of the cores, so workers do not fight over them.
    pub fn cores_and_threads(&self) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.threads.unwrap_or((cores / self.workers.max(1)).max(1));
        (cores, threads)
    }
}
