//! Live counts of one worker (batches computing, requests answered or failed,
//! redeliveries), reported in its heartbeat and its micro-service stats.
//! Prometheus metrics are separate (`metrics`); the consume path feeds both
//! through one `consume::report::Report`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Live counters of one worker; cheap to clone and share.
#[derive(Debug, Default, Clone)]
pub struct Counters(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    in_flight: AtomicU64,
    processed: AtomicU64,
    failed: AtomicU64,
    redelivered: AtomicU64,
    cancelled: AtomicU64,
    last_batch_us: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// Batches being computed.
    pub in_flight: u64,
    /// Requests answered with an output.
    pub processed: u64,
    /// Requests answered with an error or dropped as malformed.
    pub failed: u64,
    /// Batches received on a redelivery (attempt > 1).
    pub redelivered: u64,
    /// Async requests not computed because they were cancelled (or expired).
    pub cancelled: u64,
    /// Compute time of the last batch.
    pub last_batch_ms: f64,
}

impl Counters {
    /// A batch started computing.
    pub fn batch_started(&self) {
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A batch finished (successfully or not) after `compute_ms`.
    pub fn batch_finished(&self, processed: u64, failed: u64, compute_ms: f64) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.processed.fetch_add(processed, Ordering::Relaxed);
        self.0.failed.fetch_add(failed, Ordering::Relaxed);
        self.0
            .last_batch_us
            .store((compute_ms * 1000.0) as u64, Ordering::Relaxed);
    }

    /// A batch arrived on a redelivery.
    pub fn redelivered(&self) {
        self.0.redelivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Async requests left uncomputed: cancelled before a worker took them.
    pub fn cancelled(&self, requests: u64) {
        self.0.cancelled.fetch_add(requests, Ordering::Relaxed);
    }

    /// Requests that failed without being computed (malformed batch).
    pub fn rejected(&self, failed: u64) {
        self.0.failed.fetch_add(failed, Ordering::Relaxed);
    }

    /// Read every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            in_flight: self.0.in_flight.load(Ordering::Relaxed),
            processed: self.0.processed.load(Ordering::Relaxed),
            failed: self.0.failed.load(Ordering::Relaxed),
            redelivered: self.0.redelivered.load(Ordering::Relaxed),
            cancelled: self.0.cancelled.load(Ordering::Relaxed),
            last_batch_ms: self.0.last_batch_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}
