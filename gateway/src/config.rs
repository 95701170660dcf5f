//! The gateway's command line: every knob is a flag and an environment variable.

use crate::routing::ModelRoutes;
use clap::Parser;
use jetinfer_shared::config::{NatsArgs, Secret};
use jetinfer_shared::exposure::ExposureArgs;
use jetinfer_shared::serve::ServeArgs;
use jetinfer_shared::telemetry::LogArgs;
use jetinfer_shared::topology::TopologyArgs;
use std::net::SocketAddr;
use std::time::Duration;

/// Which model a request runs on, when one nobody serves is refused, and
/// when a computed answer is reused.
#[derive(Debug, Clone, clap::Args)]
pub struct RoutingArgs {
    /// The models of requests that name none, per task, split by weight
    /// (a canary): `embed:all-minilm-l6-v2=90,all-mpnet-base-v2=10;similarity:all-mpnet-base-v2`.
    /// A task not listed runs on its default model (text tasks:
    /// all-minilm-l6-v2, classify_image: efficientnet-lite0, echo: echo); a
    /// routed model no live worker serves gets no traffic while another does.
    #[arg(long, env = "MODEL_ROUTES", default_value = "")]
    pub model_routes: ModelRoutes,
    /// How long a model's task may have no live worker before its requests
    /// are refused at once (503 `no_worker`) instead of queued: a restart
    /// or a slow model load within it loses nothing. Also counted from the
    /// gateway's start.
    #[arg(long, env = "NO_WORKER_GRACE_MS", default_value_t = 10_000)]
    pub no_worker_grace_ms: u64,
    /// How long a computed answer is reused for an identical request (same
    /// model, task and input; priority aside), which is then answered
    /// without the queue and says `"cached": true`. 0 turns the cache off.
    #[arg(long, env = "CACHE_TTL_S", default_value_t = 60)]
    pub cache_ttl_s: u64,
    /// Most answers the cache keeps (least recently used out first); each
    /// costs its output's size (an embedding: about 1.6 KB).
    #[arg(long, env = "CACHE_MAX_ENTRIES", default_value_t = 10_000)]
    pub cache_max_entries: usize,
}

/// Default of `MAX_INPUT_CHARS`; the published API description states it.
pub const DEFAULT_MAX_INPUT_CHARS: usize = 10_000;

/// Default of `MAX_REQUEST_TOKENS`: about two seconds of one worker thread
/// (measured: 2,050 tokens/s on 256-token texts, `worker bench --threads 1`,
/// AMD EPYC with AVX2+FMA). 256 short candidates (a dozen tokens each) fit.
pub const DEFAULT_MAX_REQUEST_TOKENS: usize = 4096;

/// Default of `MAX_ITEMS`; the published API description states it.
pub const DEFAULT_MAX_ITEMS: usize = 256;

/// REST front door: validate, micro-batch, publish to JetStream, answer.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version, about)]
pub struct GatewayArgs {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Stream settings (used when this gateway creates the streams).
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Connection limits of the HTTP front.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Address the REST API listens on. Loopback by default: anything else
    /// needs `API_KEYS` (or `ALLOW_ANONYMOUS=true`), or the gateway refuses to start.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Protected mode's opt-out.
    #[command(flatten)]
    pub exposure: ExposureArgs,
    /// Put request text and output previews into request events (the
    /// dashboard's requests table) and `/recent_requests`, for development.
    /// Off: they carry the text's length and a salted fingerprint, and output
    /// summaries name no text and no vector values.
    #[arg(long = "dashboard-show-inputs", env = "DASHBOARD_SHOW_INPUTS")]
    pub show_inputs: bool,
    /// Unique id of this gateway; its results arrive on `infer.result.<id>`.
    /// Defaults to `gw-<random>`.
    #[arg(long, env = "GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// Finished requests kept for `GET /recent_requests`.
    #[arg(long, env = "REQUEST_LOG_SIZE", default_value_t = 5000)]
    pub request_log_size: usize,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub routing: RoutingArgs,
    #[command(flatten)]
    pub limits: Limits,
    /// How long a request sent with an `Idempotency-Key` header is remembered,
    /// in seconds: within it, a retry with the same key gets the same answer
    /// (or waits for it) instead of running the model again. Applies when
    /// this gateway creates the `INFER_IDEMPOTENCY` bucket; an existing
    /// bucket keeps its own max age.
    #[arg(long, env = "IDEMPOTENCY_TTL_S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_ttl_s: u64,
    /// How long an async request (`POST /infer/async`) and then its answer
    /// are kept, in seconds: `GET /result/{id}` is 404 after it, and a
    /// request still queued after it is dropped uncomputed. Applies when
    /// this gateway creates the `INFER_RESULTS_KV` bucket; an existing
    /// bucket keeps its own max age.
    #[arg(long, env = "ASYNC_RESULT_TTL_S", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub async_result_ttl_s: u64,
    /// API keys clients must send as `Authorization: Bearer <key>`, comma
    /// separated. Unset or empty: the API is open. `/healthz`, `/readyz`,
    /// `/metrics` and `/openapi.json` never need a key.
    #[arg(long, env = "API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<Secret>,
}

/// How requests are grouped into batches.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct BatchArgs {
    /// Most requests in one batch (one forward pass on a worker).
    #[arg(long, env = "BATCH_MAX_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch_max_size: u32,
    /// Longest a request waits for companions before its batch is sent.
    /// A batch goes sooner when no published request is still unanswered
    /// (see `BATCH_LINGER_US`), so a lone request does not wait this long.
    #[arg(long, env = "BATCH_MAX_WAIT_MS", default_value_t = 5)]
    pub batch_max_wait_ms: u64,
    /// When no published request is still unanswered (the workers are
    /// idle), how long a queue waits after its newest request, in
    /// microseconds, before it goes. Clients answered together come back
    /// within a few hundred microseconds: going at the first comer split
    /// them into two half batches, one waiting behind the other (echo at
    /// concurrency 32: 16.5 → 30 requests per batch, +40 % req/s). A lone
    /// request waits this long; 0 sends at once.
    #[arg(long, env = "BATCH_LINGER_US", default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub batch_linger_us: u64,
    /// Most model tokens one request may cost (estimated: about four bytes per
    /// token, at most 256 per text); above it the request is refused with 422
    /// `input_too_large`, so one request cannot hold a worker for long. A batch
    /// is cut at this many tokens too, so small requests never share a pass
    /// with a heavy one.
    #[arg(long, env = "MAX_REQUEST_TOKENS", default_value_t = DEFAULT_MAX_REQUEST_TOKENS)]
    pub max_request_tokens: usize,
}

impl BatchArgs {
    /// `batch_max_wait_ms` as a duration.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.batch_max_wait_ms)
    }

    /// `batch_linger_us` as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_micros(self.batch_linger_us)
    }
}

/// Input limits; exceeding one is a 4xx that names the limit.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Limits {
    /// Largest JSON request body accepted (413 above), base64 photos included.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest raw photo upload accepted (`Content-Type: image/jpeg`,
    /// `?task=classify_image`; 413 above). The gateway decodes it and sends
    /// on only the 224 x 224 crop (147 KiB), whatever its size.
    #[arg(long, env = "MAX_IMAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_image_bytes: usize,
    /// Longest text (input, query, candidate or label) in characters. The model
    /// reads at most 256 tokens of it (about 1000 characters of English); the
    /// rest is truncated as sentence-transformers does.
    #[arg(long, env = "MAX_INPUT_CHARS", default_value_t = DEFAULT_MAX_INPUT_CHARS)]
    pub max_input_chars: usize,
    /// Most candidates (similarity) or labels (classify) in one request.
    #[arg(long, env = "MAX_ITEMS", default_value_t = DEFAULT_MAX_ITEMS)]
    pub max_items: usize,
    /// How long a client waits for its answer before a 504.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Requests this gateway holds at once (queued or computing); above it a
    /// request is shed at once with 429 and `Retry-After`, so a burst far over
    /// capacity cannot pile up work nobody will wait for.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
}

impl GatewayArgs {
    /// The gateway id, generated once if none was configured.
    pub fn resolved_id(&self) -> String {
        self.gateway_id
            .clone()
            .unwrap_or_else(|| jetinfer_shared::config::random_id("gw"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_ttl_defaults_to_ten_minutes_and_is_never_zero() {
        let parse = |flags: &[&str]| {
            GatewayArgs::try_parse_from(std::iter::once("gateway").chain(flags.iter().copied()))
        };
        assert_eq!(parse(&[]).unwrap().idempotency_ttl_s, 600);
        assert_eq!(
            parse(&["--idempotency-ttl-s", "1"])
                .unwrap()
                .idempotency_ttl_s,
            1
        );
        assert!(parse(&["--idempotency-ttl-s", "0"]).is_err());
    }
}
