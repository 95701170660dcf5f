//! The micro-batcher: an actor that groups requests per (task, priority).
//!
//! One task owns every buffer; handlers talk to it through a cloneable
//! [`Batcher`] handle. A queue is flushed when it is full, when its oldest
//! request has waited `BATCH_MAX_WAIT_MS`, or at once when no published
//! request is still unanswered (idle workers should not wait for companions
//! that may never come). The batcher knows nothing about HTTP or tensors.

use crate::config::BatchArgs;
use crate::pending::Pending;
use crate::publish::Publisher;
use jetinfer_shared::protocol::{BatchItem, Priority, Task};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
    pub fn spawn(args: BatchArgs, pending: Pending, publisher: Arc<Publisher>) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(args, rx, pending, publisher));
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
    pending: Pending,
    publisher: Arc<Publisher>,
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
        // Everything registered but not buffered here has been published and awaits a result.
        let idle = pending.len() <= buffered;
        let now = Instant::now();
        let due: Vec<Key> = queues
            .iter()
            .filter(|(_, q)| idle || q.items.len() >= max || now - q.since >= args.max_wait())
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(queue) = queues.remove(&key) {
                flush(key, queue.items, max, &publisher);
            }
        }
    }
    for (key, queue) in std::mem::take(&mut queues) {
        flush(key, queue.items, max, &publisher);
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

/// Publish `items` in batches of at most `max`, each on its own task so the
/// batcher never waits for JetStream.
fn flush(key: Key, mut items: Vec<Queued>, max: usize, publisher: &Arc<Publisher>) {
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(max));
        let batch = std::mem::replace(&mut items, rest);
        let publisher = publisher.clone();
        tokio::spawn(async move { publisher.publish(key.1, key.0, batch).await });
    }
}
