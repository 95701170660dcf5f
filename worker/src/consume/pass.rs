//! Forward passes: the due batches in hand are computed in passes of at most
//! `MAX_BATCH_TOKENS` estimated tokens; each batch of a pass then gets its
//! result published and, only after that, its task acked.

use super::admit::Delivery;
use super::progress::Progress;
use super::Processor;
use crate::answers::Answered;
use async_nats::jetstream::Message;
use jetinfer_shared::protocol::{BatchItem, ItemResult, ResultBatch, Task, TaskBatch};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// Estimated model tokens of a batch (see `TaskInput::estimated_tokens`).
pub fn estimated_tokens(batch: &TaskBatch) -> usize {
    batch
        .items
        .iter()
        .map(|item| item.input.estimated_tokens())
        .sum()
}

/// Split batches (in the order given, each as its task and estimated tokens)
/// into forward passes of one task and at most `budget` estimated tokens each;
/// a batch over the budget alone is its own pass.
pub fn plan_passes(batches: &[(Task, usize)], budget: usize) -> Vec<Range<usize>> {
    let mut passes = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, &(task, t)) in batches.iter().enumerate() {
        if i > start && (used + t > budget || task != batches[start].0) {
            passes.push(start..i);
            start = i;
            used = 0;
        }
        used += t;
    }
    if start < batches.len() {
        passes.push(start..batches.len());
    }
    passes
}

impl Processor {
    /// Compute `due` (the compute slot is held) pass by pass; batches whose
    /// pass has not come yet get progress acks meanwhile.
    pub(super) async fn run_passes(self: &Arc<Self>, mut due: Vec<Delivery>) {
        let batches: Vec<(Task, usize)> = due
            .iter()
            .map(|d| (d.batch.task, estimated_tokens(&d.batch)))
            .collect();
        for pass in plan_passes(&batches, self.max_batch_tokens) {
            let group: Vec<Delivery> = due.drain(..pass.len()).collect();
            self.run_pass(group, &due).await;
        }
    }

    /// One forward pass over the requests of `group` (same task), then a
    /// result and an ack per batch, the batches concurrently, in the
    /// background: the compute slot is free again as soon as the pass is
    /// computed, so the worker asks for its next batch while this one's
    /// results are stored. The deliveries of one pass at most are in flight:
    /// the next pass waits for them before it hands its own over.
    async fn run_pass(self: &Arc<Self>, group: Vec<Delivery>, later: &[Delivery]) {
        for d in &group {
            self.report.started(d).await;
        }
        let waiting: Vec<&Message> = group.iter().chain(later).map(|d| &d.msg).collect();
        let progress = Progress::new(&waiting, self.progress_every);
        let started = Instant::now();
        let items: Vec<BatchItem> = group
            .iter()
            .flat_map(|d| d.batch.items.iter().cloned())
            .collect();
        crate::metrics::forward_pass(group.len());
        let answered = self.model.answer(&items, &progress).await;
        let compute_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut outcomes = match answered {
            Ok(outcomes) => outcomes.into_iter(),
            Err(why) => {
                for d in &group {
                    self.report.unanswered(d, &why, compute_ms).await;
                }
                if let Some(code) = why.exit_code {
                    // Only this pass dies with the process: the one before it
                    // is delivered first.
                    self.delivered().await;
                    self.report.flush().await;
                    std::process::exit(code);
                }
                return;
            }
        };
        progress.during(self.delivered()).await;
        let answers: Vec<Vec<Answered>> = group
            .iter()
            .map(|d| outcomes.by_ref().take(d.batch.items.len()).collect())
            .collect();
        let this = Arc::clone(self);
        let delivering = tokio::spawn(async move {
            // Each batch's result is stored (an fsync) and acked on its own,
            // so the batches of a merged pass are delivered side by side.
            let deliveries =
                (group.iter().zip(answers)).map(|(d, mine)| this.deliver(d, mine, compute_ms));
            futures::future::join_all(deliveries).await;
        });
        *self.delivering.lock().expect("delivering lock") = Some(delivering);
    }

    /// Wait until the last pass handed over is delivered (its results stored
    /// and its tasks acked, or left to redelivery); at once when none is.
    pub(super) async fn delivered(&self) {
        let last = self.delivering.lock().expect("delivering lock").take();
        if let Some(last) = last {
            if let Err(e) = last.await {
                tracing::error!(error = %e, "delivering a pass failed");
            }
        }
    }

    /// Publish one batch's result, then ack its task.
    async fn deliver(&self, d: &Delivery, answers: Vec<Answered>, compute_ms: f64) {
        let batch = &d.batch;
        let mut result = ResultBatch {
            batch_id: batch.batch_id,
            worker_id: self.worker_id.clone(),
            model: self.model.name_for(batch.task),
            attempt: d.attempt,
            compute_ms,
            items: batch
                .items
                .iter()
                .zip(answers)
                .map(|(item, answered)| ItemResult {
                    request_id: item.request_id,
                    outcome: answered.outcome,
                    tokens: answered.tokens,
                })
                .collect(),
        };
        if let Err(why) = self.results.publish(batch, &d.claims, &mut result).await {
            // No ack: JetStream redelivers the batch after its ack wait.
            return self.report.unanswered(d, &why, compute_ms).await;
        }
        if let Err(e) = d.msg.ack().await {
            tracing::warn!(batch_id = %batch.batch_id, error = %e, "ack failed; batch may be redelivered");
        }
        self.report.answered(d, &result).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_respect_the_token_budget_and_keep_order() {
        let embed = |tokens: &[usize]| -> Vec<(Task, usize)> {
            tokens.iter().map(|&t| (Task::Embed, t)).collect()
        };
        assert_eq!(plan_passes(&embed(&[10, 10, 10]), 25), vec![0..2, 2..3]);
        assert_eq!(
            plan_passes(&embed(&[30, 5]), 25),
            vec![0..1, 1..2],
            "an oversized batch runs alone"
        );
        assert_eq!(
            plan_passes(&embed(&[5, 5, 5]), 0),
            vec![0..1, 1..2, 2..3],
            "0: no merging"
        );
        assert_eq!(plan_passes(&embed(&[5, 5, 5]), 100), vec![0..3]);
        assert!(plan_passes(&[], 100).is_empty());
    }

    #[test]
    fn a_pass_never_mixes_tasks() {
        let batches = [
            (Task::Embed, 5),
            (Task::Embed, 5),
            (Task::Classify, 5),
            (Task::Embed, 5),
        ];
        assert_eq!(plan_passes(&batches, 100), vec![0..2, 2..3, 3..4]);
    }
}
