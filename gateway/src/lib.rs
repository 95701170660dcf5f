//! jetinfer gateway: REST → validation → micro-batches → JetStream, and back.
//!
//! # Layout
//! - [`config`]: the command line (`GatewayArgs`).
//! - [`http`]: routes, handlers, the JSON error type, request shapes and their
//!   validation, the `MAX_IN_FLIGHT` admission limit.
//! - [`cache`]: computed answers reused for identical requests (`CACHE_TTL_S`).
//! - [`batcher`]: the micro-batching actor; hands full batches to a
//!   [`batcher::BatchSink`] (no HTTP, no NATS details).
//! - [`publish`]: the sink: batch → MessagePack → `infer.task.<model>.<task>.<priority>`.
//! - [`results`]: `infer.result.<gateway-id>` → waiting requests.
//! - [`routing`]: the model a request runs on (`MODEL_ROUTES`) and whether a
//!   live worker serves it (the heartbeats, polled: 503 `no_worker` at once).
//! - [`waiters`]: the request-id → waiter map that guarantees one answer each.
//! - [`idempotency`]: `Idempotency-Key` claims and stored answers in the
//!   `INFER_IDEMPOTENCY` bucket (safe retries); its decisions in `rules`.
//! - [`stored_batches`]: batches JetStream stored and nobody reported on yet, by
//!   stream sequence, for advisories.
//! - [`deferred`]: async requests' entries in the `INFER_RESULTS_KV` bucket
//!   (`POST /infer/async`, `GET /result/{id}`), readable by any gateway.
//! - [`advisories`]: JetStream's max-deliveries/terminated advisories → immediate errors
//!   (and, for async requests, a stored `retries_exhausted` answer).
//! - [`deliveries`]: the last worker and error of each batch, from the
//!   workers' events, for the dead letters of given-up batches.
//! - [`service`]: the same API over NATS request-reply: the micro service
//!   `jetinfer-gateway`, `infer.api.<task>`.
//! - [`report`]: one call per request outcome, feeding the four below.
//! - [`metrics`]: Prometheus counters, histograms and queue gauges.
//! - [`counters`]: request counters for `/status` and the dashboard.
//! - [`events`]: finished requests and the counters, published for the dashboard.
//! - [`request_log`]: ring buffer of finished requests for `/recent_requests`.

pub mod advisories;
pub mod batcher;
pub mod cache;
pub mod config;
pub mod counters;
pub mod deferred;
pub mod deliveries;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod publish;
pub mod report;
pub mod request_log;
pub mod results;
pub mod routing;
pub mod service;
pub mod stored_batches;
pub mod waiters;

use config::GatewayArgs;
use jetinfer_shared::config::ConnectError;
use jetinfer_shared::exposure::ProtectedMode;
use jetinfer_shared::topology::{self, TopologyError};
use jetinfer_shared::{protocol, subjects};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the gateway could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Asked to listen off-host with no key (protected mode).
    #[error(transparent)]
    Exposed(#[from] ProtectedMode),
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Streams or buckets could not be set up.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The result consumer could not be started.
    #[error(transparent)]
    Results(#[from] results::ResultsError),
    /// The advisory subscription failed.
    #[error("cannot subscribe to advisories: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serve the REST API on `listener` until `stop` fires; requests in progress
/// are answered before it returns. A listener off loopback needs API keys or
/// `ALLOW_ANONYMOUS` (protected mode).
pub async fn run(
    args: GatewayArgs,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), GatewayError> {
    let keys = jetinfer_shared::keys::Keys::new(args.api_keys.clone());
    args.exposure.check(
        "the gateway",
        listener.local_addr()?,
        keys.enabled(),
        "API_KEYS",
    )?;
    let gateway_id = args.resolved_id();
    jetinfer_shared::metrics::handle();
    let client = args.nats.connect(&gateway_id).await?;
    let js = async_nats::jetstream::new(client.clone());
    let tasks = topology::ensure_streams(&js, &args.topology).await?;
    topology::ensure_workers_bucket(&js, &args.topology).await?;
    let keyed = topology::ensure_idempotency_bucket(
        &js,
        std::time::Duration::from_secs(args.idempotency_ttl_s),
        args.topology.replicas(),
    )
    .await?;
    let idempotency = idempotency::Idempotency::new(keyed, tasks, gateway_id.clone());
    let async_ttl = std::time::Duration::from_secs(args.async_result_ttl_s);
    let deferred = deferred::AsyncResults::new(
        topology::ensure_results_bucket(&js, async_ttl, args.topology.replicas()).await?,
        gateway_id.clone(),
    );

    let reply_subject = subjects::result_subject(&gateway_id);
    let results = results::subscribe(&client, &js, &gateway_id).await?;
    let waiters = waiters::Waiters::default();
    let stored = stored_batches::StoredBatches::default();
    let counters = Arc::new(counters::Counters::default());
    let report = Arc::new(report::Report::new(
        gateway_id.clone(),
        client.clone(),
        counters.clone(),
        request_log::RequestLog::new(args.request_log_size),
        args.show_inputs,
    ));
    {
        // A request forgotten unanswered: its client left, or it timed out.
        let report = report.clone();
        waiters.on_give_up(move |id| report.gave_up(id));
    }
    tokio::spawn(results::route(
        results,
        waiters.clone(),
        stored.clone(),
        report.clone(),
    ));
    let deliveries = deliveries::Deliveries::default();
    tokio::spawn(deliveries.watch(&client).await?);
    tokio::spawn(
        advisories::watch(
            client.clone(),
            js.clone(),
            stored.clone(),
            waiters.clone(),
            deferred.clone(),
            deliveries,
        )
        .await?,
    );

    let publisher = Arc::new(publish::Publisher {
        js: js.clone(),
        reply_subject,
        waiters: waiters.clone(),
        stored,
        idempotency: idempotency.clone(),
    });
    tokio::spawn(events::publish_counters(
        client.clone(),
        gateway_id.clone(),
        counters,
        stop.clone(),
    ));
    // Read once: every server of a deployment is expected to share one nats.conf.
    let max_batch_bytes = protocol::item_budget(client.server_info().max_payload);
    let batcher = batcher::Batcher::spawn(args.batch, max_batch_bytes, waiters.clone(), publisher);
    let fleet = routing::Fleet::spawn(
        js.clone(),
        std::time::Duration::from_millis(args.topology.heartbeat_interval_ms),
        std::time::Duration::from_millis(args.routing.no_worker_grace_ms),
        stop.clone(),
    );
    let state = Arc::new(http::AppState {
        gateway_id: gateway_id.clone(),
        batcher,
        waiters,
        report,
        limits: args.limits,
        nats: client,
        js,
        admission: http::admission::Admission::new(args.limits.max_in_flight),
        idempotency,
        images: http::image::Images::default(),
        routes: args.routing.model_routes.clone(),
        fleet,
        cache: cache::AnswerCache::new(
            std::time::Duration::from_secs(args.routing.cache_ttl_s),
            args.routing.cache_max_entries,
        ),
        deferred,
        async_ttl,
    });
    {
        // The same API over NATS request-reply (`infer.api.<task>`).
        let (client, state, stop) = (state.nats.clone(), state.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = service::run(client, state, stop).await {
                tracing::error!(error = %e, "NATS API (micro service jetinfer-gateway) stopped");
            }
        });
    }
    tracing::info!(gateway_id = %gateway_id, model_routes = %args.routing.model_routes.describe(), no_worker_grace_ms = args.routing.no_worker_grace_ms, "routing");
    tracing::info!(gateway_id = %gateway_id, listen = %listener.local_addr()?, "gateway ready");
    // A request waiting for its answer moves no bytes: the idle timeout must
    // outlast the request timeout, or it would cut answers that are coming.
    let mut serve = args.serve;
    let waits_s = args.limits.request_timeout_ms.div_ceil(1000) + 5;
    if serve.idle_timeout_s < waits_s {
        tracing::warn!(
            idle_timeout_s = serve.idle_timeout_s,
            request_timeout_ms = args.limits.request_timeout_ms,
            "IDLE_TIMEOUT_S raised to {waits_s} s, past REQUEST_TIMEOUT_MS"
        );
        serve.idle_timeout_s = waits_s;
    }
    jetinfer_shared::serve::serve(listener, http::app(state, keys), serve, stop).await?;
    tracing::info!(gateway_id = %gateway_id, "gateway stopped");
    Ok(())
}
