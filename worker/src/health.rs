//! `GET /healthz` on the metrics port: is this worker doing its job?
//!
//! A container healthcheck (or an orchestrator) needs more than "the process
//! runs": healthy means connected to NATS and heartbeating, the same thing the
//! gateway's `/status` sees. Until the first heartbeat is stored the worker is
//! still starting (loading the model, reaching NATS).

use axum::http::StatusCode;
use axum::Json;
use jetinfer_shared::clock::now_ms;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Shared between the heartbeat (which records each stored beat) and the
/// `/healthz` handler.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    client: OnceLock<async_nats::Client>,
    last_beat_ms: AtomicU64,
    stale_after_ms: u64,
}

impl Health {
    /// Healthy while a heartbeat was stored within the last `stale_after_ms`
    /// (the bucket's own expiry: past it, `/status` no longer lists the worker).
    pub fn new(stale_after_ms: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: OnceLock::new(),
                last_beat_ms: AtomicU64::new(0),
                stale_after_ms,
            }),
        }
    }

    /// The NATS connection whose state `/healthz` reports, once there is one.
    pub fn connected(&self, client: async_nats::Client) {
        let _ = self.inner.client.set(client);
    }

    /// A heartbeat was stored just now.
    pub fn beat(&self) {
        self.inner.last_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The answer of `GET /healthz`: 200 `ok`, or 503 with why not.
    pub fn report(&self) -> (StatusCode, Json<serde_json::Value>) {
        let last = self.inner.last_beat_ms.load(Ordering::Relaxed);
        let age_ms = (last > 0).then(|| now_ms().saturating_sub(last));
        let connected = self.inner.client.get().map(|c| c.connection_state());
        let status = match (connected, age_ms) {
            (None, _) | (_, None) => "starting",
            (Some(async_nats::connection::State::Connected), Some(age))
                if age <= self.inner.stale_after_ms =>
            {
                "ok"
            }
            (Some(async_nats::connection::State::Connected), Some(_)) => "heartbeat_stale",
            (Some(_), _) => "disconnected",
        };
        let code = match status {
            "ok" => StatusCode::OK,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = serde_json::json!({ "status": status, "last_heartbeat_age_ms": age_ms });
        (code, Json(body))
    }
}
