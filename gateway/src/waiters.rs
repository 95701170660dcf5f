//! Requests waiting for their answer, keyed by request id.
//!
//! An entry is registered before the request is queued, so a result can never
//! arrive before its waiter. Whoever *takes* the entry answers it: the result
//! router, the publisher on a failed publish, or the handler's guard when the
//! client times out or disconnects. Taking is atomic, so each request gets
//! exactly one answer and later duplicates find nothing.

use jetinfer_shared::protocol::ItemOutcome;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The one answer a waiting request receives.
#[derive(Debug)]
pub enum Reply {
    /// A worker computed it (output or per-request error).
    Done {
        /// Worker that answered.
        worker_id: String,
        /// Model that answered.
        model: String,
        /// Delivery count of the batch (1 = first try).
        attempt: u64,
        /// Output or error.
        outcome: ItemOutcome,
    },
    /// The batch never reached the work queue; the text says why.
    NotQueued(String),
    /// JetStream gave up on the batch after `attempts` deliveries
    /// (`exhausted`), or a worker terminated it (its deadline had passed).
    Abandoned {
        /// Deliveries made.
        attempts: u64,
        /// True for MaxDeliver reached, false for terminated.
        exhausted: bool,
    },
}

/// Shared map of waiting requests: one one-shot channel per request id.
#[derive(Debug, Clone, Default)]
pub struct Waiters(Arc<Mutex<HashMap<Uuid, oneshot::Sender<Reply>>>>);

impl Waiters {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Reply>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert/remove), so poisoning is ignored.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a request; the receiver gets its answer.
    pub fn register(&self, id: Uuid) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.map().insert(id, tx);
        rx
    }

    /// Answer `id` if it is still waiting; false when it was answered or given up already.
    pub fn answer(&self, id: Uuid, reply: Reply) -> bool {
        match self.map().remove(&id) {
            Some(tx) => {
                // The client may be gone; the slot is freed either way.
                let _ = tx.send(reply);
                true
            }
            None => false,
        }
    }

    /// Forget `id` without answering (timeout or client gone).
    pub fn forget(&self, id: Uuid) {
        self.map().remove(&id);
    }

    /// Requests waiting right now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Requests are registered before they are queued, so everyone here is
/// either buffered in the batcher or published and unanswered.
impl crate::batcher::Unanswered for Waiters {
    fn unanswered(&self) -> usize {
        self.len()
    }
}
