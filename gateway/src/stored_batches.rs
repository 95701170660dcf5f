//! Batches JetStream stored that nobody has reported on yet, by stream sequence.
//!
//! JetStream reports a batch it gave up on (max deliveries reached, or
//! terminated) by its stream sequence in an advisory. The publisher learns the
//! sequence from the publish ack, so this map turns an advisory back into the
//! requests still waiting for that batch, which are then answered at once
//! instead of waiting for their timeout.

use jetinfer_shared::clock::now_ms;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// How long past its deadline an entry is kept when nothing ever reports on it.
const GRACE_MS: u64 = 60_000;

struct Batch {
    id: Uuid,
    requests: Vec<Uuid>,
    deadline_ms: u64,
}

#[derive(Default)]
struct Inner {
    by_seq: HashMap<u64, Batch>,
    seq_of: HashMap<Uuid, u64>,
}

/// Shared map of stored batches awaiting a result or an advisory.
#[derive(Clone, Default)]
pub struct StoredBatches(Arc<Mutex<Inner>>);

impl StoredBatches {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// JetStream stored batch `id` at `seq`.
    pub fn published(&self, seq: u64, id: Uuid, requests: Vec<Uuid>, deadline_ms: u64) {
        let mut inner = self.inner();
        if inner.by_seq.len() % 1024 == 1023 {
            // Batches nobody ever reported on (e.g. advisories lost in a NATS
            // restart) are dropped long after their clients stopped waiting.
            let now = now_ms();
            let stale: Vec<u64> = inner
                .by_seq
                .iter()
                .filter(|(_, b)| b.deadline_ms + GRACE_MS < now)
                .map(|(s, _)| *s)
                .collect();
            for s in stale {
                if let Some(b) = inner.by_seq.remove(&s) {
                    inner.seq_of.remove(&b.id);
                }
            }
        }
        inner.seq_of.insert(id, seq);
        inner.by_seq.insert(
            seq,
            Batch {
                id,
                requests,
                deadline_ms,
            },
        );
    }

    /// A result for batch `id` arrived.
    pub fn finished(&self, id: Uuid) {
        let mut inner = self.inner();
        if let Some(seq) = inner.seq_of.remove(&id) {
            inner.by_seq.remove(&seq);
        }
    }

    /// JetStream gave up on the batch at `seq`; its requests, if it was ours.
    pub fn abandoned(&self, seq: u64) -> Option<Vec<Uuid>> {
        let mut inner = self.inner();
        let batch = inner.by_seq.remove(&seq)?;
        inner.seq_of.remove(&batch.id);
        Some(batch.requests)
    }

    /// Batches stored and not reported on.
    pub fn len(&self) -> usize {
        self.inner().by_seq.len()
    }

    /// True when every stored batch has been reported on.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_reported_once_by_result_or_advisory() {
        let f = StoredBatches::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let r = Uuid::new_v4();
        f.published(1, a, vec![r], now_ms());
        f.published(2, b, vec![], now_ms());
        f.finished(a);
        assert_eq!(f.abandoned(1), None, "answered batches are not abandoned");
        assert_eq!(f.abandoned(2), Some(vec![]));
        assert_eq!(f.abandoned(2), None);
        assert!(f.is_empty());
    }
}
