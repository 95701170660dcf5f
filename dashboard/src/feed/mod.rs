//! NATS → state. Read-only by construction: core subscriptions (which never
//! consume from a work queue), an ordered KV watch and consumer-info reads,
//! plus a timer that ages the state once a second.
//!
//! Neither task nor result subjects are among the subscriptions: their
//! messages carry request text and answers. Load per worker is counted from
//! workers' `completed` events; only [`previews`], with
//! `DASHBOARD_SHOW_INPUTS`, reads task batches.
//!
//! Each loop survives NATS going away: subscriptions are restored by the
//! client on reconnect, and the KV watch and queue poll retry every second.

pub mod previews;

use crate::state::{ConsumerDepth, Queue, StackState};
use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{GatewayStats, Heartbeat, RequestRecord, WorkerEvent};
use jetinfer_shared::subjects;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Shared = Arc<Mutex<StackState>>;

const RETRY: Duration = Duration::from_secs(1);
/// How often the state is aged: the page refreshes at the same pace.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

fn with(stack: &Shared, f: impl FnOnce(&mut StackState)) {
    f(&mut stack.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Start every feed; they end when `stop` fires.
pub fn spawn(client: async_nats::Client, stack: Shared, stop: CancellationToken) {
    let feeds: [std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>; 5] = [
        Box::pin(expiry(stack.clone())),
        Box::pin(events(client.clone(), stack.clone())),
        Box::pin(heartbeats(client.clone(), stack.clone())),
        Box::pin(queue_depth(client.clone(), stack.clone())),
        Box::pin(dead_count(client, stack)),
    ];
    for feed in feeds {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = feed => {}
            }
        });
    }
}

/// Age the state once a second, so dead workers are mourned and stale
/// pending requests forgotten whether or not a page is open.
async fn expiry(stack: Shared) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tick.tick().await;
        with(&stack, |s| s.expire(now_ms()));
    }
}

/// Subscribe, retrying until the client accepts the subscription.
async fn subscribe(client: &async_nats::Client, subject: &'static str) -> async_nats::Subscriber {
    loop {
        match client.subscribe(subject).await {
            Ok(sub) => return sub,
            Err(e) => {
                tracing::warn!(subject, error = %e, "subscribe failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Events: workers' (batches started and ended, workers online and gone)
/// and gateways' (finished requests, counters).
async fn events(client: async_nats::Client, stack: Shared) {
    let mut events = subscribe(&client, subjects::EVENT_SUBJECTS).await;
    while let Some(msg) = events.next().await {
        // infer.event.<source>.<kind>
        let mut parts = msg.subject.as_str().splitn(4, '.').skip(2);
        let (Some(source), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "request" => {
                if let Ok(record) = serde_json::from_slice::<RequestRecord>(&msg.payload) {
                    with(&stack, |s| s.request_finished(record));
                }
            }
            "stats" => {
                if let Ok(stats) = serde_json::from_slice::<GatewayStats>(&msg.payload) {
                    with(&stack, |s| s.gateway_stats(source, stats));
                }
            }
            _ => {
                if let Ok(event) = serde_json::from_slice::<WorkerEvent>(&msg.payload) {
                    with(&stack, |s| s.worker_event(event));
                }
            }
        }
    }
}

/// Watch the heartbeat bucket (current values first, then every change).
async fn heartbeats(client: async_nats::Client, stack: Shared) {
    let js = async_nats::jetstream::new(client);
    loop {
        let watch = match js.get_key_value(subjects::WORKERS_BUCKET).await {
            Ok(kv) => kv.watch_with_history(">").await.ok(),
            Err(_) => None, // no worker has created the bucket yet
        };
        if let Some(mut watch) = watch {
            while let Some(Ok(entry)) = watch.next().await {
                match entry.operation {
                    Operation::Put => {
                        if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&entry.value) {
                            with(&stack, |s| s.heartbeat(beat));
                        }
                    }
                    Operation::Delete | Operation::Purge => {
                        with(&stack, |s| s.heartbeat_removed(&entry.key));
                    }
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Poll the work consumers' backlog once a second.
async fn queue_depth(client: async_nats::Client, stack: Shared) {
    let js = async_nats::jetstream::new(client);
    let mut tick = tokio::time::interval(RETRY);
    loop {
        tick.tick().await;
        let queue = work_queue(&js).await;
        with(&stack, |s| s.queue(queue));
    }
}

/// Poll the dead letters' count once a second, apart from the queue: a
/// login that may not read it (an older access.conf) waits out each request,
/// and the queue depth must not wait with it.
async fn dead_count(client: async_nats::Client, stack: Shared) {
    let js = async_nats::jetstream::new(client);
    let mut tick = tokio::time::interval(RETRY);
    loop {
        tick.tick().await;
        match js.get_stream(subjects::DEAD_STREAM).await {
            Ok(dead) => {
                let count = dead.cached_info().state.messages;
                with(&stack, |s| s.dead_letters(count));
            }
            Err(e) => tracing::debug!(error = %e, "dead letters not counted"),
        }
    }
}

/// The work consumers' backlog, each and in all.
async fn work_queue(js: &async_nats::jetstream::Context) -> Queue {
    let infos = match js.get_stream(subjects::TASK_STREAM).await {
        Ok(stream) => jetinfer_shared::topology::work_consumers(&stream)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match infos {
        Ok(infos) => {
            let consumers: Vec<ConsumerDepth> = (infos.iter())
                .map(|i| ConsumerDepth {
                    name: i.name.clone(),
                    pending: i.num_pending,
                    in_flight: i.num_ack_pending as u64,
                })
                .collect();
            Queue {
                pending: consumers.iter().map(|c| c.pending).sum(),
                in_flight: consumers.iter().map(|c| c.in_flight).sum(),
                consumers,
                ..Default::default()
            }
        }
        Err(error) => Queue {
            error: Some(error),
            ..Default::default()
        },
    }
}
