//! What the gateway tells watchers (the dashboard) on core NATS: each finished
//! request on `infer.event.<gateway-id>.request`, and its counters every
//! second on `infer.event.<gateway-id>.stats`. Fire-and-forget: a lost event
//! only blurs a chart, so failures are logged and never affect a request.

use crate::counters::Counters;
use jetinfer_shared::protocol::RequestRecord;
use jetinfer_shared::subjects;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn publish<T: Serialize>(client: &async_nats::Client, subject: String, value: &T) {
    match serde_json::to_vec(value) {
        Ok(body) => {
            if let Err(e) = client.publish(subject, body.into()).await {
                tracing::debug!(error = %e, "gateway event not published");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode gateway event"),
    }
}

/// Announce one finished request.
pub async fn request_finished(
    client: &async_nats::Client,
    gateway_id: &str,
    record: &RequestRecord,
) {
    publish(
        client,
        subjects::event_subject(gateway_id, "request"),
        record,
    )
    .await;
}

/// Publish the counters every second until `stop` fires (the subject keeps
/// the name `stats`, which the dashboard subscribes to).
pub async fn publish_counters(
    client: async_nats::Client,
    gateway_id: String,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let subject = subjects::event_subject(&gateway_id, "stats");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => publish(&client, subject.clone(), &counters.snapshot()).await,
        }
    }
}
