//! The launcher's command line, and the values derived from it once.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

/// Run nats-server, the workers and the gateway locally until Ctrl-C.
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
    /// Gateway listen address.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8000")]
    pub gateway_listen: String,
    /// Dashboard listen address.
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "127.0.0.1:3000")]
    pub dashboard_listen: String,
    /// Model folder; when unset, workers' `--fetch-model` downloads it by `MODEL_ID`.
    #[arg(long, env = "MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Folder holding the `worker` and `gateway` binaries; default: next to this one.
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

    /// How every child reaches nats-server: loopback, since the launcher
    /// starts that server on this machine.
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    /// The machine's cores and the compute threads each worker gets: `--threads`,
    /// or an even share of the cores, so workers do not fight over them.
    pub fn cores_and_threads(&self) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.threads.unwrap_or((cores / self.workers.max(1)).max(1));
        (cores, threads)
    }
}
