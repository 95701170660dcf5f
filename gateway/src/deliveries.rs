//! Who last had each batch, from the workers' `started` and `failed`
//! events: a batch JetStream gives up on is copied to the dead letters with
//! its last worker and last error, which the max-deliveries advisory does
//! not name. Every gateway hears every worker's events, so whichever gateway
//! copies a batch first knows as much as the one that published it.

use futures::StreamExt;
use jetinfer_shared::protocol::WorkerEvent;
use jetinfer_shared::subjects;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Batches remembered: the newest, far more than are ever delivered at once.
const KEPT: usize = 16_384;

/// What the events said of one batch's deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Last {
    /// The worker that started its latest delivery.
    pub worker: String,
    /// The latest error a worker reported for it, if any.
    pub error: Option<String>,
}

/// The latest delivery of recent batches, by batch id.
#[derive(Clone)]
pub struct Deliveries(Arc<Mutex<LruCache<Uuid, Last>>>);

impl Default for Deliveries {
    fn default() -> Self {
        let kept = NonZeroUsize::new(KEPT).unwrap_or(NonZeroUsize::MIN);
        Self(Arc::new(Mutex::new(LruCache::new(kept))))
    }
}

impl Deliveries {
    fn inner(&self) -> std::sync::MutexGuard<'_, LruCache<Uuid, Last>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take in a worker event; only `started` and `failed` of a batch count.
    /// A later delivery keeps the error of an earlier one until it reports
    /// its own: a hung or killed worker reports nothing.
    pub fn record(&self, event: &WorkerEvent) {
        let Some(batch) = event.batch_id else { return };
        let mut inner = self.inner();
        let error = match event.kind.as_str() {
            "started" => inner.get(&batch).and_then(|l| l.error.clone()),
            "failed" => event.error.clone(),
            _ => return,
        };
        inner.put(
            batch,
            Last {
                worker: event.worker_id.clone(),
                error,
            },
        );
    }

    /// What is known of batch `id`.
    pub fn last(&self, id: Uuid) -> Option<Last> {
        self.inner().get(&id).cloned()
    }

    /// Subscribe to the workers' `started` and `failed` events, then return
    /// the loop that records them.
    pub async fn watch(
        &self,
        client: &async_nats::Client,
    ) -> Result<impl std::future::Future<Output = ()>, async_nats::SubscribeError> {
        let started = client
            .subscribe(subjects::event_subject("*", "started"))
            .await?;
        let failed = client
            .subscribe(subjects::event_subject("*", "failed"))
            .await?;
        let deliveries = self.clone();
        Ok(async move {
            let mut events = futures::stream::select(started, failed);
            while let Some(msg) = events.next().await {
                if let Ok(event) = serde_json::from_slice::<WorkerEvent>(&msg.payload) {
                    deliveries.record(&event);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, worker: &str, batch: Uuid, error: Option<&str>) -> WorkerEvent {
        WorkerEvent {
            worker_id: worker.into(),
            kind: kind.into(),
            batch_id: Some(batch),
            requests: 1,
            attempt: 1,
            latency_ms: 0.0,
            error: error.map(Into::into),
            at_ms: 0,
        }
    }

    #[test]
    fn the_latest_worker_and_the_latest_error_are_kept() {
        let d = Deliveries::default();
        let batch = Uuid::new_v4();
        assert_eq!(d.last(batch), None);
        d.record(&event("started", "w-1", batch, None));
        d.record(&event("failed", "w-1", batch, Some("result lost")));
        d.record(&event("completed", "w-9", batch, None));
        // A second delivery that hangs says nothing: the first error stays.
        d.record(&event("started", "w-2", batch, None));
        let last = d.last(batch).expect("known");
        assert_eq!(last.worker, "w-2");
        assert_eq!(last.error.as_deref(), Some("result lost"));
    }
}
