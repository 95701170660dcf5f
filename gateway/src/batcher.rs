//! The micro-batcher: an actor that groups requests per (task, priority).
//!
//! One task owns every buffer; handlers talk to it through a cloneable
//! [`Batcher`] handle. A queue is flushed when it is full, when its oldest
//! request has waited `BATCH_MAX_WAIT_MS`, or at once when no published
//! request is still unanswered (idle workers should not wait for companions
//! that may never come). Flushed batches go to a [`BatchSink`] and idleness
//! is asked of an [`Unanswered`], so the batcher knows nothing about HTTP,
//! NATS or tensors and can be tested on a paused clock.

use crate::config::BatchArgs;
use jetinfer_shared::protocol::{BatchItem, Priority, Task};
use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// One accepted request on its way to a batch.
#[derive(Debug)]
pub struct Queued {
    /// Request id and input.
    pub item: BatchItem,
    /// Queue it goes to.
    pub priority: Priority,
    /// Unix ms after which its client no longer waits.
    pub deadline_ms: u64,
}

/// Requests of one task and priority that leave the batcher together.
#[derive(Debug)]
pub struct Batch {
    /// The task every request in it asks for.
    pub task: Task,
    /// The queue every request in it came from.
    pub priority: Priority,
    /// At most `BATCH_MAX_SIZE` requests, oldest first.
    pub items: Vec<Queued>,
}

/// Where the batcher hands each batch it flushes (the publisher, or a test).
///
/// `accept` must not wait: one task serves every queue, so a slow sink would
/// hold back all of them.
pub trait BatchSink: Send + 'static {
    /// Take a batch; it is never empty.
    fn accept(&self, batch: Batch);
}

/// How many accepted requests still wait for their answer, the batcher's own
/// buffered ones included.
///
/// When that is no more than the batcher buffers, nothing it flushed earlier
/// is still being computed: workers are idle and waiting for companions would
/// only add latency, so every queue is flushed at once.
pub trait Unanswered: Send + 'static {
    /// Requests accepted and not yet answered.
    fn unanswered(&self) -> usize;
}

/// Cloneable handle to the batcher task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Queued>,
}

/// The batcher task has stopped (the gateway is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the batcher has stopped")]
pub struct BatcherStopped;

impl Batcher {
    /// Start the batcher task; it flushes everything and ends when every handle is dropped.
    pub fn spawn(args: BatchArgs, unanswered: impl Unanswered, sink: impl BatchSink) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(args, rx, unanswered, sink));
        Self { tx }
    }

    /// Hand a request to the batcher.
    pub async fn submit(&self, queued: Queued) -> Result<(), BatcherStopped> {
        self.tx.send(queued).await.map_err(|_| BatcherStopped)
    }
}

type Key = (Priority, Task);

struct Queue {
    items: Vec<Queued>,
    since: Instant,
}

async fn run(
    args: BatchArgs,
    mut rx: mpsc::Receiver<Queued>,
    unanswered: impl Unanswered,
    sink: impl BatchSink,
) {
    let max = args.batch_max_size as usize;
    let mut queues: BTreeMap<Key, Queue> = BTreeMap::new();
    loop {
        let oldest = queues.values().map(|q| q.since).min();
        tokio::select! {
            next = rx.recv() => match next {
                Some(queued) => {
                    push(&mut queues, queued);
                    // Take whatever else already arrived, so a burst forms full batches.
                    while let Ok(queued) = rx.try_recv() {
                        push(&mut queues, queued);
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(oldest.unwrap_or_else(Instant::now) + args.max_wait()), if oldest.is_some() => {}
        }
        let buffered: usize = queues.values().map(|q| q.items.len()).sum();
        let idle = unanswered.unanswered() <= buffered;
        let now = Instant::now();
        let due: Vec<Key> = queues
            .iter()
            .filter(|(_, q)| idle || q.items.len() >= max || now - q.since >= args.max_wait())
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(queue) = queues.remove(&key) {
                flush(key, queue.items, max, &sink);
            }
        }
    }
    for (key, queue) in std::mem::take(&mut queues) {
        flush(key, queue.items, max, &sink);
    }
}

fn push(queues: &mut BTreeMap<Key, Queue>, queued: Queued) {
    let key = (queued.priority, queued.item.input.task());
    queues
        .entry(key)
        .or_insert_with(|| Queue {
            items: Vec::new(),
            since: Instant::now(),
        })
        .items
        .push(queued);
}

/// Hand `items` to the sink in batches of at most `max`.
fn flush(key: Key, mut items: Vec<Queued>, max: usize, sink: &impl BatchSink) {
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(max));
        sink.accept(Batch {
            task: key.1,
            priority: key.0,
            items: std::mem::replace(&mut items, rest),
        });
    }
}
