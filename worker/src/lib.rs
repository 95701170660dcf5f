//! jetinfer worker: JetStream pull loop → candle model → results → ack.
//!
//! # Layout
//! - [`config`]: the command line (`WorkerArgs`).
//! - [`backend`]: model loading and the compute thread; the only tensor code.
//! - [`bench`]: `worker bench`, raw backend throughput against the baseline.
//! - [`models`]: which models this worker serves (`MODELS`) and so which tasks it pulls.
//! - [`answers`]: embed / similarity / classify / image answers from one forward pass.
//! - [`consume`]: the life of a batch: pull, admit, pass, publish + ack, report.
//! - [`faults`]: crash / delay / hang / lost-result injection, as wrappers
//!   around the model and the result publisher.
//! - [`identity`]: the worker id is its NATS login's name (or a claimed pool identity).
//! - [`heartbeat`]: liveness record in the `INFER_WORKERS` bucket.
//! - [`health`]: `GET /healthz`: connected and heartbeating.
//! - [`events`]: `infer.event.<worker>.<kind>` notifications.
//! - [`counters`]: live counts reported by the heartbeat and the micro service.
//! - [`metrics`]: Prometheus metrics and the `GET /metrics` listener.
//! - [`service`]: registration as a NATS micro service (`nats micro ls`).

pub mod answers;
pub mod backend;
pub mod bench;
pub mod config;
pub mod consume;
pub mod counters;
pub mod events;
pub mod faults;
pub mod health;
pub mod heartbeat;
pub mod identity;
pub mod lease;
pub mod metrics;
pub mod models;
pub mod service;

use backend::{source, thread::BackendThread, BackendError};
use config::WorkerArgs;
use consume::deferred::AsyncResults;
use consume::publish::ResultPublisher;
use consume::pull::{Pulling, Source};
use consume::report::Report;
use consume::Processor;
use events::{BatchRef, Events};
use faults::{FaultyModel, FaultyResults};
use health::Health;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::config::ConnectError;
use jetinfer_shared::protocol::{ModelName, Priority};
use jetinfer_shared::topology::{self, TopologyError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The model could not be loaded.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// `MODELS` or `TASKS` ask for what this worker cannot serve.
    #[error(transparent)]
    Models(#[from] models::ChoiceError),
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Streams, consumers or buckets could not be set up.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The worker id and the NATS login disagree, or no identity is free.
    #[error(transparent)]
    Identity(#[from] identity::IdentityMismatch),
    /// The metrics address could not be bound.
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Metrics {
        /// `METRICS_LISTEN`.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The compute lease file could not be opened or created.
    #[error("cannot open the compute lease COMPUTE_LEASE={}: {source}", path.display())]
    Lease {
        /// `COMPUTE_LEASE`.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Load the model and serve batches until `stop` fires; then finish the batch
/// in hand, remove the heartbeat and return.
pub async fn run(mut args: WorkerArgs, stop: CancellationToken) -> Result<(), WorkerError> {
    let identity = identity::resolve(&mut args)?;
    let worker_id = identity.id.clone();
    let lease = match &args.compute_lease {
        Some(path) => Some(
            lease::ComputeLease::open(path, args.topology.min_ack_wait()).map_err(|source| {
                WorkerError::Lease {
                    path: path.clone(),
                    source,
                }
            })?,
        ),
        None => None,
    };
    jetinfer_shared::metrics::handle();
    let choice = models::choose(
        &args.models,
        &args.model_id,
        args.image_model_dir.as_ref(),
        &args.tasks,
    )?;
    tracing::info!(worker_id = %worker_id, models = ?choice.names(), tasks = ?choice.tasks, threads = args.threads, "loading models");
    let loaded = {
        let (choice, args) = (choice.clone(), args.clone());
        tokio::task::spawn_blocking(move || load_models(&choice, &args))
            .await
            .map_err(|_| BackendError::Stopped)??
    };
    let backend = BackendThread::spawn(loaded, args.threads.max(1))?;

    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|source| WorkerError::Metrics {
            addr: args.metrics_listen,
            source,
        })?;
    tracing::info!(worker_id = %worker_id, metrics = %metrics_listener.local_addr().map_err(|source| WorkerError::Metrics { addr: args.metrics_listen, source })?, "serving /metrics");
    let health = Health::new(args.topology.heartbeat_ttl().as_millis() as u64);
    tokio::spawn(metrics::serve(
        metrics_listener,
        health.clone(),
        stop.clone(),
    ));

    // Reaching NATS may take forever (it is down); a stop must not wait for it.
    let Some(reached) = stop
        .run_until_cancelled(reach_nats(&args, &choice.queues(), &worker_id))
        .await
    else {
        tracing::info!(worker_id = %worker_id, "stopped before NATS was reached");
        return Ok(());
    };
    let Reached {
        client,
        js,
        kv,
        sources,
    } = reached?;
    health.connected(client.clone());

    let faults = Arc::new(faults::Faults::new(args.faults.clone()));
    if faults.any() {
        tracing::warn!(worker_id = %worker_id, faults = ?args.faults, "fault injection is ON");
    }
    let counters = counters::Counters::default();
    let events = Events::new(client.clone(), worker_id.clone());
    let model = answers::Model::new(backend.clone(), choice.clone(), args.classify_temperature);
    let deferred = AsyncResults::new(js.clone(), worker_id.clone());
    let results = ResultPublisher::new(js.clone(), worker_id.clone(), deferred.clone());
    let processor = Arc::new(Processor {
        js: js.clone(),
        model: FaultyModel::new(
            model,
            faults.clone(),
            args.topology.max_ack_wait() + Duration::from_millis(500),
        ),
        results: FaultyResults::new(results, faults),
        deferred,
        report: Report::new(events.clone(), counters.clone(), worker_id.clone()),
        worker_id: worker_id.clone(),
        progress_every: (args.topology.min_ack_wait() / 2).max(Duration::from_millis(50)),
        slot: Semaphore::new(1),
        merge_batches: if args.max_batch_tokens == 0 {
            1
        } else {
            consume::MERGE_BATCHES
        },
        max_batch_tokens: args.max_batch_tokens,
        delivering: Default::default(),
    });

    let pulling = Pulling {
        client: client.clone(),
        js: js.clone(),
        sources,
        lease,
    };
    let serving = tokio::spawn(processor.serve(pulling, stop.clone()));

    let beat_stop = CancellationToken::new();
    let identity = heartbeat::Identity {
        id: worker_id.clone(),
        tasks: choice.tasks.clone(),
        models: choice.served(),
        started_at_ms: now_ms(),
    };
    let beating = tokio::spawn(heartbeat::run(
        kv,
        identity,
        counters.clone(),
        Duration::from_millis(args.topology.heartbeat_interval_ms),
        health,
        beat_stop.clone(),
    ));
    let registration = service::Registration {
        worker_id: worker_id.clone(),
        models: (choice.served().into_iter().map(|m| m.name))
            .collect::<Vec<_>>()
            .join(","),
        tasks: choice
            .tasks
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(","),
    };
    let micro = tokio::spawn(service::run(client.clone(), registration, counters));
    events.emit("online", BatchRef::default(), 0.0, None).await;
    tracing::info!(worker_id = %worker_id, models = ?choice.names(), tasks = ?choice.tasks, "worker ready");

    let _ = serving.await;
    beat_stop.cancel();
    micro.abort();
    let _ = beating.await;
    events.emit("stopped", BatchRef::default(), 0.0, None).await;
    // With NATS unreachable a flush never completes: the last events are
    // best effort, a bounded stop is not.
    match tokio::time::timeout(FINAL_FLUSH, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "final flush failed"),
        Err(_) => tracing::warn!("NATS unreachable; stopping without the final flush"),
    }
    tracing::info!(worker_id = %worker_id, "worker stopped");
    Ok(())
}

/// Load the models `choice` names: the text model from `MODEL_DIR` (or the
/// hub, by `MODEL_ID`) with the configured backend and kernels, the image
/// model from `IMAGE_MODEL_DIR`.
fn load_models(
    choice: &models::Choice,
    args: &WorkerArgs,
) -> Result<backend::thread::Loaded, BackendError> {
    let text = match &choice.text {
        Some(name) => {
            let dir = source::resolve(args.model_dir.clone(), &args.model_id)?;
            // Which kernels and weight format run, so a figure can be traced
            // to its path (a kernel this CPU lacks fails in the load below).
            let kernels = args
                .kernels
                .resolve()
                .map_or("unavailable", |isa| isa.name());
            tracing::info!(model = %name, dir = %dir.display(), backend = ?args.backend, kernels, weights = args.weights.name(), "loading the text model");
            Some(backend::load_with(
                args.backend,
                args.kernels,
                args.weights,
                &dir,
            )?)
        }
        None => None,
    };
    let image = match &choice.image {
        Some(dir) => {
            tracing::info!(model = jetinfer_shared::protocol::IMAGE_MODEL, dir = %dir.display(), "loading the image model");
            Some(backend::vision::efficientnet::EfficientNetLite0::load(
                dir,
                &candle_core::Device::Cpu,
            )?)
        }
        None => None,
    };
    Ok(backend::thread::Loaded { text, image })
}

/// Longest wait at stop for buffered events to reach NATS.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// A worker's NATS side, set up: connection, heartbeat bucket, work consumers.
struct Reached {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    kv: async_nats::jetstream::kv::Store,
    sources: Vec<Source>,
}

/// Connect and open (or create) the streams, the heartbeat bucket and one
/// work consumer per queue served (a model's task) and priority, high
/// priority first.
async fn reach_nats(
    args: &WorkerArgs,
    queues: &[(ModelName, jetinfer_shared::protocol::Task)],
    worker_id: &str,
) -> Result<Reached, WorkerError> {
    let client = args.nats.connect(worker_id).await?;
    let js = async_nats::jetstream::new(client.clone());
    let stream = topology::ensure_streams(&js, &args.topology).await?;
    let kv = topology::ensure_workers_bucket(&js, &args.topology).await?;
    let mut sources = Vec::new();
    for priority in Priority::ALL {
        for (model, task) in queues {
            let consumer =
                topology::ensure_work_consumer(&stream, &args.topology, model, *task, priority)
                    .await?;
            let name = jetinfer_shared::subjects::work_consumer(model, *task, priority);
            sources.push(Source::new(name, consumer));
        }
    }
    Ok(Reached {
        client,
        js,
        kv,
        sources,
    })
}
