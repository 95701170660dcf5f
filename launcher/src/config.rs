//! The launcher's command line, and the values derived from it once.

use crate::exposure::{local, ListenArgs};
use crate::restart::RestartPolicy;
use crate::secrets::{SecretsArgs, SecretsCommand};
use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Run nats-server, the workers, the gateway and the dashboard locally until
/// Ctrl-C, restarting any of them that dies; or (`launcher secrets`) only
/// prepare the NATS identities.
#[derive(Debug, Parser)]
#[command(
    name = "launcher",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// `secrets`: the secrets step alone.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a command: start the stack.
    #[command(flatten)]
    pub up: LauncherArgs,
}

/// What the launcher does besides starting the stack.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the NATS identities (one per process: admin, gateway,
    /// dashboard, worker-1 … worker-N), the nats-server config made from
    /// them and, with --tls, the certificates; keep what exists unless --rotate.
    Secrets(SecretsCommand),
    /// The dead letters in INFER_DEAD (batches given up on, malformed or
    /// expired): `ls`, `show <seq>`, `purge`; as the admin login.
    Dead(crate::dead::DeadCommand),
}

/// The stack's command line.
#[derive(Debug, clap::Args)]
pub struct LauncherArgs {
    /// The state folder, the number of workers (each gets its own NATS
    /// identity), the nats-server config, TLS.
    #[command(flatten)]
    pub secrets: SecretsArgs,
    /// Compute threads per worker; default: every core. When two workers'
    /// passes at once would need more threads than there are cores, the
    /// workers take turns (a compute lease in the state folder): a lone
    /// request runs on every core and busy workers do not fight over them.
    #[arg(long, env = "THREADS")]
    pub threads: Option<usize>,
    /// nats-server program.
    #[arg(long, env = "NATS_SERVER_BIN", default_value = "nats-server")]
    pub nats_server_bin: PathBuf,
    /// NATS client port.
    #[arg(long, env = "NATS_PORT", default_value_t = 4222)]
    pub nats_port: u16,
    /// NATS monitoring port.
    #[arg(long, env = "NATS_MONITOR_PORT", default_value_t = 8222)]
    pub nats_monitor_port: u16,
    /// nats-servers to run, routed into one cluster on this machine: node i
    /// (from 0) listens on `NATS_PORT` + i, monitors on `NATS_MONITOR_PORT` + i
    /// and routes on `NATS_CLUSTER_PORT` + i, with a store of its own; every
    /// service is given all of them in `NATS_URL`.
    #[arg(long, env = "NATS_CLUSTER", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub nats_cluster: u16,
    /// Route port of the cluster's first node (`--nats-cluster` above 1).
    #[arg(long, env = "NATS_CLUSTER_PORT", default_value_t = 6222)]
    pub nats_cluster_port: u16,
    /// Copies of every stream and bucket, passed on to the services; default:
    /// 1 on one server, 3 on a cluster (2 on a cluster of two).
    #[arg(long, env = "STREAM_REPLICAS", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: Option<u8>,
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
    /// EfficientNet-Lite0 folder (`./jetinfer up` installs it into
    /// `.state/models/efficientnet-lite0`): every worker serves
    /// `classify_image` with it. Unset: text tasks only. `MODELS` (passed on to
    /// the workers) narrows what each serves.
    #[arg(long, env = "IMAGE_MODEL_DIR")]
    pub image_model_dir: Option<PathBuf>,
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
        self.secrets.dir.join("logs")
    }

    /// The state folder (identities, logs, JetStream store).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.secrets.dir
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.secrets.workers
    }

    /// How every child reaches nats-server: on this machine, through
    /// loopback when the server listens on every interface (`tls://` under
    /// `--tls`, so a client that cannot do TLS fails at once, clearly).
    pub fn nats_url(&self) -> String {
        let scheme = if self.secrets.tls { "tls" } else { "nats" };
        (0..self.nats_nodes())
            .map(|i| {
                let at = SocketAddr::new(local(self.listen.host()), node_port(self.nats_port, i));
                format!("{scheme}://{at}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// nats-servers in the stack.
    pub fn nats_nodes(&self) -> usize {
        usize::from(self.nats_cluster)
    }

    /// `STREAM_REPLICAS` for the services: as given, else one copy per
    /// server up to three.
    pub fn stream_replicas(&self) -> u8 {
        self.stream_replicas
            .unwrap_or_else(|| self.nats_cluster.min(3) as u8)
    }

    /// The restart policy of every child.
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            max_restarts: self.max_restarts,
            window: Duration::from_secs(self.restart_window_s),
        }
    }

    /// The machine's cores and the compute threads each worker gets:
    /// `--threads`, or every core.
    pub fn cores_and_threads(&self) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores, self.threads.unwrap_or(cores).max(1))
    }

    /// The workers' compute lease (`COMPUTE_LEASE`), when two of them
    /// computing at once would need more threads than the machine has cores:
    /// then they take turns. (With fewer threads each, say `THREADS=1` on 2
    /// cores, turns would leave cores idle, so each computes when it likes.)
    pub fn compute_lease(&self) -> Option<PathBuf> {
        let (cores, threads) = self.cores_and_threads();
        take_turns(self.workers(), threads, cores).then(|| self.state_dir().join("compute.lease"))
    }
}

/// Port `base` + `i` of cluster node `i` (a base too close to 65535 wraps
/// into a port nats-server then fails to bind, naming it).
pub fn node_port(base: u16, i: usize) -> u16 {
    base.wrapping_add(i as u16)
}

/// Whether `workers` workers of `threads` compute threads each should take
/// turns at `cores` cores: when two passes at once would oversubscribe them.
fn take_turns(workers: usize, threads: usize, cores: usize) -> bool {
    workers > 1 && 2 * threads > cores
}

#[cfg(test)]
mod tests {
    use super::take_turns;

    #[test]
    fn workers_take_turns_only_when_two_passes_would_oversubscribe_the_cores() {
        assert!(take_turns(3, 2, 2), "the default: every core each");
        assert!(take_turns(2, 12, 16));
        assert!(!take_turns(3, 1, 2), "one thread each on 2 cores: no turns");
        assert!(!take_turns(4, 4, 16));
        assert!(
            !take_turns(1, 16, 16),
            "a lone worker has no one to wait for"
        );
    }
}
