//! Requests waiting for their answer, keyed by request id.
//!
//! An entry is registered before the request is queued, so a result can never
//! arrive before its waiter. Whoever *takes* the entry answers it: the result
//! router, the publisher on a failed publish, or the handler's guard when the
//! client times out or disconnects. Taking is atomic, so each request gets
//! exactly one answer and later duplicates find nothing. A request forgotten
//! unanswered is remembered for a while, so its late result is not mistaken
//! for a duplicate, and reported, so a client that left is counted.

use jetinfer_shared::protocol::ItemOutcome;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
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
        /// Model tokens its texts took (0 when replayed from a stored answer).
        tokens: u32,
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

/// Requests given up on that are remembered, so a late result for one of
/// them is told from a duplicate: about the requests of a few seconds at load,
/// far longer than a late result takes to come.
const GIVEN_UP_KEPT: usize = 4096;

/// Called with a request's id when its handler stops waiting unanswered.
type OnGiveUp = Box<dyn Fn(Uuid) + Send + Sync>;

#[derive(Default)]
struct Inner {
    waiting: HashMap<Uuid, oneshot::Sender<Reply>>,
    /// The last [`GIVEN_UP_KEPT`] requests forgotten unanswered, oldest first.
    given_up: VecDeque<Uuid>,
}

/// Shared map of waiting requests: one one-shot channel per request id.
#[derive(Clone, Default)]
pub struct Waiters {
    inner: Arc<Mutex<Inner>>,
    on_give_up: Arc<OnceLock<OnGiveUp>>,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("waiting", &self.len())
            .finish()
    }
}

impl Waiters {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Call `report` with each request its handler stops waiting for before
    /// an answer came (timed out, client gone); set once, by `http::app`, so
    /// the request counters hear of clients that left. Later calls are ignored.
    pub fn on_give_up(&self, report: impl Fn(Uuid) + Send + Sync + 'static) {
        let _ = self.on_give_up.set(Box::new(report));
    }

    /// Register a request; the receiver gets its answer.
    pub fn register(&self, id: Uuid) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.inner().waiting.insert(id, tx);
        rx
    }

    /// Answer `id` if it is still waiting; false when it was answered or given up already.
    pub fn answer(&self, id: Uuid, reply: Reply) -> bool {
        let waiting = self.inner().waiting.remove(&id);
        match waiting {
            Some(tx) => {
                // The client may be gone; the slot is freed either way.
                let _ = tx.send(reply);
                true
            }
            None => false,
        }
    }

    /// The handler of `id` stops waiting (answered, timed out or client
    /// gone). Still unanswered, it is remembered as given up on and reported.
    pub fn forget(&self, id: Uuid) {
        let unanswered = {
            let mut inner = self.inner();
            let unanswered = inner.waiting.remove(&id).is_some();
            if unanswered {
                if inner.given_up.len() == GIVEN_UP_KEPT {
                    inner.given_up.pop_front();
                }
                inner.given_up.push_back(id);
            }
            unanswered
        };
        if let Some(report) = self.on_give_up.get().filter(|_| unanswered) {
            report(id);
        }
    }

    /// Was `id` given up on unanswered (recently)? A result for it is late,
    /// not a duplicate.
    pub fn gave_up_on(&self, id: Uuid) -> bool {
        self.inner().given_up.contains(&id)
    }

    /// Requests waiting right now.
    pub fn len(&self) -> usize {
        self.inner().waiting.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn done() -> Reply {
        Reply::NotQueued("test".into())
    }

    #[test]
    fn only_a_request_forgotten_unanswered_is_given_up_on() {
        let waiters = Waiters::default();
        let reported = Arc::new(AtomicUsize::new(0));
        let counted = reported.clone();
        waiters.on_give_up(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let (answered, left) = (Uuid::new_v4(), Uuid::new_v4());
        let _rx = waiters.register(answered);
        let _gone = waiters.register(left);
        assert!(waiters.answer(answered, done()));
        waiters.forget(answered);
        waiters.forget(left);
        assert_eq!(
            reported.load(Ordering::Relaxed),
            1,
            "only the unanswered one"
        );
        assert!(
            !waiters.answer(answered, done()),
            "a second result finds nobody"
        );
        assert!(!waiters.gave_up_on(answered), "so it is a duplicate");
        assert!(!waiters.answer(left, done()));
        assert!(waiters.gave_up_on(left), "a late result, not a duplicate");
        assert!(waiters.is_empty());
    }

    #[test]
    fn the_given_up_are_remembered_within_a_bound() {
        let waiters = Waiters::default();
        let ids: Vec<Uuid> = (0..=GIVEN_UP_KEPT).map(|_| Uuid::new_v4()).collect();
        for &id in &ids {
            let _rx = waiters.register(id);
            waiters.forget(id);
        }
        assert!(!waiters.gave_up_on(ids[0]), "the oldest is forgotten");
        assert!(ids[1..].iter().all(|&id| waiters.gave_up_on(id)));
    }
}
