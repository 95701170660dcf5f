//! The consume path: the life of a batch inside a worker, one file per step.
//!
//! 1. [`pull`]: while the compute slot is free, one pull request waits on each
//!    work consumer; the first batch delivered withdraws the others unless it
//!    is expected to be done sooner (and, with dynamic batching, takes queued
//!    ones along).
//! 2. [`admit`]: decode and vet each message; malformed or expired ones are
//!    terminated; async requests are claimed in the results bucket
//!    ([`deferred`]), and the cancelled ones left out.
//! 3. [`pass`]: compute the due batches in forward passes, publish each result
//!    with a JetStream ack ([`publish`]) and only then ack the task; a pass's
//!    results are stored in the background while the next batch is pulled.
//! 4. [`report`]: every outcome told once to metrics, counters, events and log.
//!
//! While a batch waits or computes, [`progress`] acks keep it from being
//! redelivered. Anything that goes wrong before the ack leaves the batch to
//! JetStream's redelivery. The model and the result publisher arrive wrapped
//! in fault injection (`crate::faults`); nothing here knows which faults exist.

pub mod admit;
pub mod deferred;
pub mod pass;
pub mod progress;
pub mod publish;
pub mod pull;
pub mod report;
#[cfg(test)]
mod tests;

use crate::faults::{FaultyModel, FaultyResults};
use async_nats::jetstream::Message;
use deferred::AsyncResults;
use progress::Progress;
use report::Report;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Most batches taken at once for a merged forward pass.
pub const MERGE_BATCHES: usize = 8;

/// Everything a pull loop needs to answer a batch.
pub struct Processor {
    /// Where a batch it terminates is copied first (`INFER_DEAD`).
    pub js: async_nats::jetstream::Context,
    /// The model, behind injected delay/hang/crash.
    pub model: FaultyModel,
    /// The result publisher, behind injected lost results.
    pub results: FaultyResults,
    /// The results bucket, where async requests are claimed.
    pub deferred: AsyncResults,
    /// Where every outcome is reported.
    pub report: Report,
    /// This worker's id (in results and logs).
    pub worker_id: String,
    /// How often to tell JetStream a waiting or long batch is still being worked on.
    pub progress_every: Duration,
    /// One permit: the batch being computed.
    pub slot: Semaphore,
    /// Most batches taken at once when more are queued (1: no merging).
    pub merge_batches: usize,
    /// Most estimated tokens in one merged forward pass (`MAX_BATCH_TOKENS`).
    pub max_batch_tokens: usize,
    /// The last computed pass's results being stored and its tasks acked,
    /// while the next batch is pulled and computed (`None`: nothing in flight).
    pub delivering: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Processor {
    /// Answer the task messages in hand: vet each, then compute the due ones,
    /// the high-priority ones first, in passes of one task each.
    async fn handle(self: &Arc<Self>, msgs: Vec<Message>) {
        let mut due = Vec::new();
        for msg in msgs {
            if let Some(d) = self.admit(msg).await {
                due.push(d);
            }
        }
        if due.is_empty() {
            return;
        }
        due.sort_by_key(|d| (d.batch.priority, d.batch.task));
        let all: Vec<&Message> = due.iter().map(|d| &d.msg).collect();
        let progress = Progress::new(&all, self.progress_every);
        let Ok(_permit) = progress.during(self.slot.acquire()).await else {
            return; // semaphore closed: shutting down, leave them to redelivery
        };
        self.run_passes(due).await;
    }
}
