//! Liveness in the `INFER_WORKERS` KV bucket.
//!
//! A worker puts its record every interval; the bucket's max-age drops it
//! three intervals after the last put, so a killed worker disappears by itself.
//! A worker that stops cleanly deletes its key at once.

use crate::counters::Counters;
use crate::health::Health;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{Heartbeat, Task};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What stays the same between heartbeats.
pub struct Identity {
    /// Worker id and KV key.
    pub id: String,
    /// Tasks pulled.
    pub tasks: Vec<Task>,
    /// Models served, each with its tasks.
    pub models: Vec<jetinfer_shared::protocol::ServedModel>,
    /// Unix ms of start.
    pub started_at_ms: u64,
}

fn record(me: &Identity, counters: &Counters, state: &str) -> Heartbeat {
    let s = counters.snapshot();
    Heartbeat {
        id: me.id.clone(),
        tasks: me.tasks.clone(),
        models: me.models.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        state: state.to_owned(),
        in_flight: s.in_flight,
        processed: s.processed,
        failed: s.failed,
        redelivered: s.redelivered,
        cancelled: s.cancelled,
        last_batch_ms: s.last_batch_ms,
        started_at_ms: me.started_at_ms,
        updated_at_ms: now_ms(),
    }
}

async fn put(kv: &async_nats::jetstream::kv::Store, beat: &Heartbeat, health: &Health) {
    let body = match serde_json::to_vec(beat) {
        Ok(b) => b,
        Err(e) => return tracing::warn!(error = %e, "cannot encode heartbeat"),
    };
    match kv.put(&beat.id, body.into()).await {
        Ok(_) => health.beat(),
        Err(e) => tracing::warn!(error = %e, worker_id = %beat.id, "heartbeat not stored"),
    }
}

/// Beat every `interval` until `stop` fires (each stored beat told to
/// `health`), then delete the key. A beat in progress is abandoned at `stop`,
/// and the delete waits at most `interval`: with NATS unreachable neither
/// would ever finish, and the key expires by itself anyway.
pub async fn run(
    kv: async_nats::jetstream::kv::Store,
    me: Identity,
    counters: Counters,
    interval: Duration,
    health: Health,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let beat = record(&me, &counters, "ready");
                if stop.run_until_cancelled(put(&kv, &beat, &health)).await.is_none() {
                    break;
                }
            }
        }
    }
    match tokio::time::timeout(interval.max(Duration::from_secs(1)), kv.delete(&me.id)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, worker_id = %me.id, "cannot remove heartbeat"),
        Err(_) => {
            tracing::warn!(worker_id = %me.id, "heartbeat not removed in time; it expires by itself")
        }
    }
}
