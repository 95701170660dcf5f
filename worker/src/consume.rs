//! The pull loop: one puller per work consumer, one batch computed at a time.
//!
//! A worker asks JetStream for the next batch only when its compute slot is
//! free, so busy workers leave work to idle ones (load-aware dispatch without
//! any registry). The order for every batch is: compute, publish the result
//! with a JetStream ack, and only then ack the task. Anything that goes wrong
//! before the ack leaves the batch to JetStream's redelivery.

use crate::backend::thread::BackendThread;
use crate::events::{BatchRef, Events};
use crate::faults::{Fate, Faults};
use crate::metrics;
use crate::stats::Stats;
use crate::tasks;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind, Message};
use futures::StreamExt;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{self, BatchItem, ItemOutcome, ItemResult, ResultBatch, TaskBatch};
use jetinfer_shared::subjects;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Exit status of an injected crash (what a supervisor sees).
pub const CRASH_EXIT_CODE: i32 = 70;

/// Most batches taken at once for a merged forward pass.
pub const MERGE_BATCHES: usize = 8;

/// How long the pull for extra queued batches may wait (they were queued a moment ago).
const QUEUED_WAIT: Duration = Duration::from_millis(20);

/// How long one pull request waits for a batch before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Everything a puller needs to answer a batch.
pub struct Processor {
    /// JetStream context for result publishes.
    pub js: jetstream::Context,
    /// The model thread.
    pub backend: BackendThread,
    /// Event publisher.
    pub events: Events,
    /// Counters for heartbeats.
    pub stats: Stats,
    /// This worker's id.
    pub worker_id: String,
    /// Zero-shot classification temperature.
    pub temperature: f32,
    /// How often to tell JetStream a long batch is still being worked on.
    pub progress_every: Duration,
    /// One permit: the batch being computed.
    pub slot: Semaphore,
    /// Most batches taken at once when more are queued (1: no merging).
    pub merge_batches: usize,
    /// Most estimated tokens in one merged forward pass (`MAX_BATCH_TOKENS`).
    pub max_batch_tokens: usize,
    /// Fault injection.
    pub faults: Faults,
    /// How long an injected hang holds a batch: past its longest ack wait.
    pub hang_for: Duration,
}

/// Poll `fut` to completion, sending AckProgress on every message in `msgs`
/// every `every`, so a slow-but-alive worker keeps its batches instead of
/// having them redelivered.
async fn with_progress<F: Future>(msgs: &[&Message], every: Duration, fut: F) -> F::Output {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => {
                for msg in msgs {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "progress ack failed");
                    }
                }
            }
        }
    }
}

/// Estimated model tokens of a batch: about four characters per word piece,
/// plus `[CLS]`/`[SEP]`, at most the 256 the model reads per text. An
/// estimate is enough to bound a merged forward pass without tokenising twice.
pub fn estimated_tokens(batch: &TaskBatch) -> usize {
    batch
        .items
        .iter()
        .flat_map(|item| item.input.texts())
        .map(|text| (text.len() / 4 + 2).min(256))
        .sum()
}

/// Split `batches` (in arrival order) into forward passes of at most
/// `budget` estimated tokens each; a batch over the budget alone is its own pass.
pub fn plan_passes(tokens: &[usize], budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut passes = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, &t) in tokens.iter().enumerate() {
        if i > start && used + t > budget {
            passes.push(start..i);
            start = i;
            used = 0;
        }
        used += t;
    }
    if start < tokens.len() {
        passes.push(start..tokens.len());
    }
    passes
}

/// A decoded batch that is due: it will be computed.
struct Ready {
    msg: Message,
    batch: TaskBatch,
    attempt: u64,
}

impl Ready {
    fn batch_ref(&self) -> BatchRef {
        BatchRef {
            batch_id: Some(self.batch.batch_id),
            requests: self.batch.items.len(),
            attempt: self.attempt,
        }
    }
}

impl Processor {
    /// Pull from `consumer` until `stop` fires; a batch already pulled is finished.
    ///
    /// An idle worker waits for one batch; once it has it, it also takes (without
    /// waiting) up to [`Processor::merge_batches`] − 1 more that are already queued,
    /// and computes them together in forward passes of at most `max_batch_tokens`.
    pub async fn pull_loop(
        self: Arc<Self>,
        consumer: PullConsumer,
        name: String,
        stop: CancellationToken,
    ) {
        loop {
            // Wait until idle: a busy worker does not ask for more work.
            tokio::select! {
                _ = stop.cancelled() => return,
                permit = self.slot.acquire() => drop(permit),
            }
            let pulled = tokio::select! {
                _ = stop.cancelled() => return,
                pulled = consumer.batch().max_messages(1).expires(PULL_EXPIRES).messages() => pulled,
            };
            let mut messages = match pulled {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "pull failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut held = Vec::new();
            while let Some(next) = messages.next().await {
                match next {
                    Ok(msg) => held.push(msg),
                    Err(e) => {
                        tracing::debug!(consumer = %name, error = %e, "pull ended");
                        break;
                    }
                }
            }
            if held.is_empty() {
                continue;
            }
            // JetStream says how many more wait behind this one; ask only then,
            // so a lone batch never waits for companions.
            let behind = held
                .last()
                .and_then(|m| m.info().ok())
                .map_or(0, |i| i.pending as usize);
            if self.merge_batches > 1 && behind > 0 {
                let more = behind.min(self.merge_batches - 1);
                held.extend(self.queued(&consumer, &name, more).await);
            }
            self.handle(held).await;
        }
    }

    /// Up to `count` batches known to be waiting on `consumer`; the pull gives
    /// up after [`QUEUED_WAIT`] if other workers took them first.
    async fn queued(&self, consumer: &PullConsumer, name: &str, count: usize) -> Vec<Message> {
        let fetched = consumer
            .batch()
            .max_messages(count)
            .expires(QUEUED_WAIT)
            .messages()
            .await;
        let mut more = Vec::new();
        match fetched {
            Ok(mut messages) => {
                while let Some(next) = messages.next().await {
                    match next {
                        Ok(msg) => more.push(msg),
                        Err(e) => {
                            tracing::debug!(consumer = %name, error = %e, "extra pull ended");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(consumer = %name, error = %e, "no extra batches"),
        }
        more
    }

    /// Decode and vet one message: `None` when it was malformed or expired
    /// (terminated and reported here).
    async fn admit(&self, msg: Message) -> Option<Ready> {
        let attempt = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
        let batch: TaskBatch = match protocol::decode(&msg.payload) {
            Ok(batch) => batch,
            Err(e) => {
                self.reject(&msg, attempt, e.to_string()).await;
                return None;
            }
        };
        if let Err(e) = batch.check_limits() {
            self.reject(&msg, attempt, format!("malformed batch: {e}"))
                .await;
            return None;
        }
        let ready = Ready {
            msg,
            batch,
            attempt,
        };
        if attempt > 1 {
            self.stats.redelivered();
            self.events
                .emit("redelivered", ready.batch_ref(), 0.0, None)
                .await;
        }
        if now_ms() > ready.batch.deadline_ms {
            self.log_batch(&ready.batch, attempt, 0.0, "expired", None);
            self.term(&ready.msg).await;
            self.events
                .emit("expired", ready.batch_ref(), 0.0, None)
                .await;
            return None;
        }
        Some(ready)
    }

    /// Answer the task messages in hand: vet each, then compute the due ones
    /// in forward passes of at most `max_batch_tokens` estimated tokens.
    async fn handle(&self, msgs: Vec<Message>) {
        let mut ready = Vec::new();
        for msg in msgs {
            if let Some(r) = self.admit(msg).await {
                ready.push(r);
            }
        }
        if ready.is_empty() {
            return;
        }
        let all: Vec<&Message> = ready.iter().map(|r| &r.msg).collect();
        let Ok(_permit) = with_progress(&all, self.progress_every, self.slot.acquire()).await
        else {
            return; // semaphore closed: shutting down, leave them to redelivery
        };
        let tokens: Vec<usize> = ready.iter().map(|r| estimated_tokens(&r.batch)).collect();
        let passes = plan_passes(&tokens, self.max_batch_tokens);
        for pass in passes {
            // Later passes wait their turn with progress acks.
            let waiting: Vec<&Message> = ready[pass.start..].iter().map(|r| &r.msg).collect();
            self.run_pass(&ready[pass], &waiting).await;
        }
    }

    /// One forward pass over the requests of `group` (same task), then a
    /// result and an ack per batch. `waiting` get progress acks meanwhile.
    async fn run_pass(&self, group: &[Ready], waiting: &[&Message]) {
        let plan = self.faults.plan();
        for r in group {
            self.stats.batch_started();
            self.events.emit("started", r.batch_ref(), 0.0, None).await;
        }
        let started = Instant::now();
        if !plan.delay.is_zero() {
            metrics::fault("delay");
            tracing::info!(worker_id = %self.worker_id, batches = group.len(),
                fault = "delay", delay_ms = plan.delay.as_millis() as u64, "injected delay");
            with_progress(waiting, self.progress_every, tokio::time::sleep(plan.delay)).await;
        }
        match plan.fate {
            Fate::Crash => {
                metrics::fault("crash");
                for r in group {
                    self.log_batch(&r.batch, r.attempt, 0.0, "crash", Some("injected crash"));
                    self.events
                        .emit("failed", r.batch_ref(), 0.0, Some("injected crash".into()))
                        .await;
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), self.events.flush()).await;
                std::process::exit(CRASH_EXIT_CODE);
            }
            Fate::Hang => {
                metrics::fault("hang");
                for r in group {
                    self.log_batch(&r.batch, r.attempt, 0.0, "hang", Some("injected hang"));
                }
                tokio::time::sleep(self.hang_for).await;
                for r in group {
                    self.stats
                        .batch_finished(0, 0, started.elapsed().as_secs_f64() * 1000.0);
                    self.events
                        .emit("failed", r.batch_ref(), 0.0, Some("injected hang".into()))
                        .await;
                }
                return;
            }
            Fate::Normal | Fate::Drop => {}
        }

        metrics::forward_pass(group.len());
        let items: Vec<BatchItem> = group
            .iter()
            .flat_map(|r| r.batch.items.iter().cloned())
            .collect();
        let computed = with_progress(
            waiting,
            self.progress_every,
            tasks::compute(&self.backend, &items, self.temperature),
        )
        .await;
        let compute_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut outcomes = computed
            .unwrap_or_else(|e| {
                tracing::error!(worker_id = %self.worker_id, error = %e, "forward pass failed in the model");
                vec![ItemOutcome::Error(format!("model error: {e}")); items.len()]
            })
            .into_iter();
        for r in group {
            let mine: Vec<ItemOutcome> = outcomes.by_ref().take(r.batch.items.len()).collect();
            self.finish(r, mine, compute_ms, plan.fate == Fate::Drop)
                .await;
        }
    }

    /// Publish one batch's result and ack it (or, for an injected drop, lose it).
    async fn finish(&self, r: &Ready, outcomes: Vec<ItemOutcome>, compute_ms: f64, drop: bool) {
        let (batch, attempt, batch_ref) = (&r.batch, r.attempt, r.batch_ref());
        if drop {
            // Computed, then lost: no publish, no ack, as if the packet vanished.
            metrics::fault("drop");
            self.stats.batch_finished(0, 0, compute_ms);
            self.log_batch(
                batch,
                attempt,
                compute_ms,
                "drop",
                Some("injected lost result"),
            );
            return self
                .events
                .emit(
                    "failed",
                    batch_ref,
                    compute_ms,
                    Some("injected lost result".into()),
                )
                .await;
        }
        let failed = outcomes
            .iter()
            .filter(|o| matches!(o, ItemOutcome::Error(_)))
            .count() as u64;
        self.stats
            .batch_finished(outcomes.len() as u64 - failed, failed, compute_ms);

        let result = ResultBatch {
            batch_id: batch.batch_id,
            worker_id: self.worker_id.clone(),
            model: self.backend.model_name().to_owned(),
            attempt,
            compute_ms,
            items: batch
                .items
                .iter()
                .zip(outcomes)
                .map(|(item, outcome)| ItemResult {
                    request_id: item.request_id,
                    outcome,
                })
                .collect(),
        };
        if let Err(e) = self.publish(batch, &result).await {
            // No ack: JetStream redelivers the batch after its ack wait.
            self.log_batch(batch, attempt, compute_ms, "unpublished", Some(&e));
            return self
                .events
                .emit("failed", batch_ref, compute_ms, Some(e))
                .await;
        }
        if let Err(e) = r.msg.ack().await {
            tracing::warn!(batch_id = %batch.batch_id, error = %e, "ack failed; batch may be redelivered");
        }
        let outcome = if failed == 0 { "ok" } else { "error" };
        metrics::batch_done(batch.task, outcome, batch.items.len(), compute_ms / 1000.0);
        for item in &result.items {
            let error = match &item.outcome {
                ItemOutcome::Ok(_) => None,
                ItemOutcome::Error(e) => Some(e.as_str()),
            };
            tracing::info!(request_id = %item.request_id, batch_id = %batch.batch_id,
                worker_id = %self.worker_id, task = %batch.task, attempt, latency_ms = compute_ms,
                outcome = if error.is_none() { "ok" } else { "error" }, error, "task done");
        }
        self.events
            .emit("completed", batch_ref, compute_ms, None)
            .await;
    }

    /// One log line per request of a batch that did not complete normally.
    fn log_batch(
        &self,
        batch: &TaskBatch,
        attempt: u64,
        latency_ms: f64,
        outcome: &'static str,
        error: Option<&str>,
    ) {
        metrics::batch_done(batch.task, outcome, batch.items.len(), latency_ms / 1000.0);
        for item in &batch.items {
            tracing::warn!(request_id = %item.request_id, batch_id = %batch.batch_id,
                worker_id = %self.worker_id, task = %batch.task, attempt, latency_ms, outcome,
                fault = outcome, error, "task not answered by this delivery");
        }
    }

    /// Publish the result and wait for JetStream to store it.
    async fn publish(&self, batch: &TaskBatch, result: &ResultBatch) -> Result<(), String> {
        let body = protocol::encode(result).map_err(|e| e.to_string())?;
        let mut headers = subjects::payload_headers(&batch.batch_id, result.items.len());
        headers.insert(subjects::HEADER_WORKER, self.worker_id.as_str());
        let ack = self
            .js
            .publish_with_headers(batch.reply_subject.clone(), headers, body.into())
            .await
            .map_err(|e| e.to_string())?;
        ack.await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// A message that is not a task batch: Term it (redelivery cannot fix it) and say so.
    async fn reject(&self, msg: &Message, attempt: u64, error: String) {
        tracing::error!(worker_id = %self.worker_id, subject = %msg.subject, attempt, error = %error,
            outcome = "malformed", "terminating malformed task message");
        self.stats.rejected(1);
        self.term(msg).await;
        let batch = BatchRef {
            attempt,
            ..Default::default()
        };
        self.events.emit("failed", batch, 0.0, Some(error)).await;
    }

    async fn term(&self, msg: &Message) {
        if let Err(e) = msg.ack_with(AckKind::Term).await {
            tracing::warn!(error = %e, "term failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_respect_the_token_budget_and_keep_order() {
        assert_eq!(plan_passes(&[10, 10, 10], 25), vec![0..2, 2..3]);
        assert_eq!(
            plan_passes(&[30, 5], 25),
            vec![0..1, 1..2],
            "an oversized batch runs alone"
        );
        assert_eq!(
            plan_passes(&[5, 5, 5], 0),
            vec![0..1, 1..2, 2..3],
            "0: no merging"
        );
        assert_eq!(plan_passes(&[5, 5, 5], 100), vec![0..3]);
        assert!(plan_passes(&[], 100).is_empty());
    }
}
