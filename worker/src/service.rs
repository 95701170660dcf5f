//! The worker as a NATS micro service, so the standard tooling sees it:
//! `nats micro ls` lists every worker, `nats micro info|stats jetinfer-worker`
//! shows each one's models, tasks and counters, with no jetinfer-specific tool.
//!
//! Work still arrives through JetStream pull consumers (that is what gives
//! retries); the service's one endpoint, `infer.worker.<id>.status`, answers
//! with the worker's live counters.

use crate::counters::Counters;
use async_nats::service::ServiceExt;
use futures::StreamExt;
use std::collections::HashMap;

/// Name every worker registers under; instances differ by id.
pub const SERVICE_NAME: &str = "jetinfer-worker";

/// What the service reports about this worker.
pub struct Registration {
    /// Worker id (also in the endpoint subject).
    pub worker_id: String,
    /// Models served, comma separated.
    pub models: String,
    /// Tasks pulled, comma separated.
    pub tasks: String,
}

/// Register and answer status requests until the connection closes.
pub async fn run(
    client: async_nats::Client,
    me: Registration,
    counters: Counters,
) -> Result<(), async_nats::Error> {
    let for_stats = counters.clone();
    let service = client
        .service_builder()
        .description("jetinfer inference worker (work arrives via JetStream)")
        .metadata(HashMap::from([
            ("worker_id".to_owned(), me.worker_id.clone()),
            ("models".to_owned(), me.models),
            ("tasks".to_owned(), me.tasks),
        ]))
        .stats_handler(move |_endpoint, _stats| {
            serde_json::to_value(for_stats.snapshot()).unwrap_or_default()
        })
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await?;
    let mut status = service
        .endpoint(format!("infer.worker.{}.status", me.worker_id))
        .await?;
    while let Some(request) = status.next().await {
        let body = serde_json::to_vec(&counters.snapshot()).unwrap_or_default();
        if let Err(e) = request.respond(Ok(body.into())).await {
            tracing::debug!(error = %e, "status reply lost");
        }
    }
    Ok(())
}
