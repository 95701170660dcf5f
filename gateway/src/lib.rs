//! jetinfer gateway: REST → validation → micro-batches → JetStream, and back.
//!
//! # Layout
//! - [`config`]: the command line (`GatewayArgs`).
//! - [`http`]: routes, handlers, the JSON error type, input validation.
//! - [`batcher`]: the micro-batching actor (no HTTP, no NATS details).
//! - [`publish`]: batch → MessagePack → `infer.task.<task>.<priority>`.
//! - [`results`]: `infer.result.<gateway-id>` → waiting requests.
//! - [`pending`]: the request-id → waiter map that guarantees one answer each.
//! - [`inflight`]: published batches by stream sequence, for advisories.
//! - [`advisories`]: JetStream's max-deliveries/terminated advisories → immediate errors.
//! - [`metrics`]: Prometheus counters, histograms and queue gauges.
//! - [`events`]: finished requests and counters published for the dashboard.
//! - [`request_log`]: ring buffer of finished requests for `/recent_requests`.
//! - [`stats`]: counters for `/status`.

pub mod advisories;
pub mod batcher;
pub mod config;
pub mod events;
pub mod http;
pub mod inflight;
pub mod metrics;
pub mod pending;
pub mod publish;
pub mod request_log;
pub mod results;
pub mod stats;

use config::GatewayArgs;
use jetinfer_shared::config::ConnectError;
use jetinfer_shared::subjects;
use jetinfer_shared::topology::{self, TopologyError};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the gateway could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Streams or buckets could not be set up.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The result subscription failed.
    #[error("cannot subscribe to results: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serve the REST API on `listener` until `stop` fires; requests in progress
/// are answered before it returns.
pub async fn run(
    args: GatewayArgs,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), GatewayError> {
    let gateway_id = args.resolved_id();
    jetinfer_shared::metrics::handle();
    let client = args.nats.connect(&gateway_id).await?;
    let js = async_nats::jetstream::new(client.clone());
    topology::ensure_streams(&js, &args.topology).await?;
    topology::ensure_workers_bucket(&js, &args.topology).await?;

    let reply_subject = subjects::result_subject(&gateway_id);
    let results = client.subscribe(reply_subject.clone()).await?;
    let pending = pending::Pending::default();
    let counters = Arc::new(stats::Counters::default());
    let inflight = inflight::InFlight::default();
    tokio::spawn(results::route(
        results,
        pending.clone(),
        inflight.clone(),
        counters.clone(),
    ));
    tokio::spawn(
        advisories::watch(
            client.clone(),
            js.clone(),
            inflight.clone(),
            pending.clone(),
        )
        .await?,
    );

    let publisher = Arc::new(publish::Publisher {
        js: js.clone(),
        reply_subject,
        pending: pending.clone(),
        inflight,
    });
    tokio::spawn(events::stats_loop(
        client.clone(),
        gateway_id.clone(),
        counters.clone(),
        stop.clone(),
    ));
    let batcher = batcher::Batcher::spawn(args.batch, pending.clone(), publisher);
    let state = Arc::new(http::AppState {
        gateway_id: gateway_id.clone(),
        batcher,
        pending,
        counters,
        limits: args.limits,
        requests: request_log::RequestLog::new(args.request_log_size),
        nats: client,
        js,
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            args.limits.max_in_flight as usize,
        )),
    });
    let keys = http::auth::ApiKeys::new(args.api_keys);
    tracing::info!(gateway_id = %gateway_id, listen = %listener.local_addr()?, "gateway ready");
    axum::serve(listener, http::app(state, keys))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    tracing::info!(gateway_id = %gateway_id, "gateway stopped");
    Ok(())
}
