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
use jetinfer_shared::protocol::{self, ItemOutcome, ItemResult, ResultBatch, TaskBatch};
use jetinfer_shared::subjects;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Exit status of an injected crash (what a supervisor sees).
pub const CRASH_EXIT_CODE: i32 = 70;

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
    /// Fault injection.
    pub faults: Faults,
    /// How long an injected hang holds a batch: past its longest ack wait.
    pub hang_for: Duration,
}

/// Poll `fut` to completion, sending AckProgress on `msg` every `every` so a
/// slow-but-alive worker keeps its batch instead of having it redelivered.
async fn with_progress<F: Future>(msg: &Message, every: Duration, fut: F) -> F::Output {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "progress ack failed");
                }
            }
        }
    }
}

impl Processor {
    /// Pull from `consumer` until `stop` fires; a batch already pulled is finished.
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
            while let Some(next) = messages.next().await {
                match next {
                    Ok(msg) => self.handle(msg).await,
                    Err(e) => {
                        tracing::debug!(consumer = %name, error = %e, "pull ended");
                        break;
                    }
                }
            }
        }
    }

    /// Answer one task message.
    async fn handle(&self, msg: Message) {
        let attempt = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
        let batch: TaskBatch = match protocol::decode(&msg.payload) {
            Ok(batch) => batch,
            Err(e) => return self.reject(&msg, attempt, e.to_string()).await,
        };
        if let Err(e) = batch.check_limits() {
            return self
                .reject(&msg, attempt, format!("malformed batch: {e}"))
                .await;
        }
        let batch_ref = BatchRef {
            batch_id: Some(batch.batch_id),
            requests: batch.items.len(),
            attempt,
        };
        let Ok(_permit) = with_progress(&msg, self.progress_every, self.slot.acquire()).await
        else {
            return; // semaphore closed: shutting down, leave it to redelivery
        };
        if attempt > 1 {
            self.stats.redelivered();
            self.events.emit("redelivered", batch_ref, 0.0, None).await;
        }
        if now_ms() > batch.deadline_ms {
            self.log_batch(&batch, attempt, 0.0, "expired", None);
            self.term(&msg).await;
            return self.events.emit("expired", batch_ref, 0.0, None).await;
        }

        let plan = self.faults.plan();
        self.stats.batch_started();
        self.events.emit("started", batch_ref, 0.0, None).await;
        let started = Instant::now();
        if !plan.delay.is_zero() {
            metrics::fault("delay");
            tracing::info!(batch_id = %batch.batch_id, worker_id = %self.worker_id, attempt,
                fault = "delay", delay_ms = plan.delay.as_millis() as u64, "injected delay");
            with_progress(&msg, self.progress_every, tokio::time::sleep(plan.delay)).await;
        }
        match plan.fate {
            Fate::Crash => {
                metrics::fault("crash");
                self.log_batch(&batch, attempt, 0.0, "crash", Some("injected crash"));
                self.events
                    .emit("failed", batch_ref, 0.0, Some("injected crash".into()))
                    .await;
                let _ = tokio::time::timeout(Duration::from_millis(500), self.events.flush()).await;
                std::process::exit(CRASH_EXIT_CODE);
            }
            Fate::Hang => {
                metrics::fault("hang");
                self.log_batch(&batch, attempt, 0.0, "hang", Some("injected hang"));
                tokio::time::sleep(self.hang_for).await;
                self.stats
                    .batch_finished(0, 0, started.elapsed().as_secs_f64() * 1000.0);
                return self
                    .events
                    .emit("failed", batch_ref, 0.0, Some("injected hang".into()))
                    .await;
            }
            Fate::Normal | Fate::Drop => {}
        }

        let computed = with_progress(
            &msg,
            self.progress_every,
            tasks::compute(&self.backend, &batch.items, self.temperature),
        )
        .await;
        let compute_ms = started.elapsed().as_secs_f64() * 1000.0;
        let outcomes = computed.unwrap_or_else(|e| {
            tracing::error!(batch_id = %batch.batch_id, error = %e, "batch failed in the model");
            vec![ItemOutcome::Error(format!("model error: {e}")); batch.items.len()]
        });
        if plan.fate == Fate::Drop {
            // Computed, then lost: no publish, no ack, as if the packet vanished.
            metrics::fault("drop");
            self.stats.batch_finished(0, 0, compute_ms);
            self.log_batch(
                &batch,
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
        if let Err(e) = self.publish(&batch, &result).await {
            // No ack: JetStream redelivers the batch after its ack wait.
            self.log_batch(&batch, attempt, compute_ms, "unpublished", Some(&e));
            return self
                .events
                .emit("failed", batch_ref, compute_ms, Some(e))
                .await;
        }
        if let Err(e) = msg.ack().await {
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
