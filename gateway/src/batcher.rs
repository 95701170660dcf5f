//! The micro-batcher: an actor that groups requests per (model, task, priority).
//!
//! One task owns every buffer; handlers talk to it through a cloneable
//! [`Batcher`] handle. A queue is flushed when it is full (`BATCH_MAX_SIZE`
//! requests, as many bytes as one task message may carry, or as many
//! estimated model tokens as one request may cost), when its
//! oldest request has waited `BATCH_MAX_WAIT_MS`, or, when no published
//! request is still unanswered, once no request has joined it for
//! `BATCH_LINGER_US` (idle workers should not wait for companions that may
//! never come, but clients answered together come back together). Flushed batches go to a [`BatchSink`] and idleness
//! is asked of an [`Unanswered`], so the batcher knows nothing about HTTP,
//! NATS or tensors and can be tested on a paused clock.

use crate::config::BatchArgs;
use jetinfer_shared::protocol::{self, BatchItem, ModelName, Priority, Task};
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// One accepted request on its way to a batch.
#[derive(Debug)]
pub struct Queued {
    /// Request id and input.
    pub item: BatchItem,
    /// Model it runs on (named in the request, or routed).
    pub model: ModelName,
    /// Queue it goes to.
    pub priority: Priority,
    /// Unix ms after which its client no longer waits.
    pub deadline_ms: u64,
    /// Revision of its `Idempotency-Key` claim (sent with a key only): the
    /// publisher records the batch's stream sequence there, expecting it.
    pub claim_revision: Option<u64>,
    /// Told once JetStream stored the request's batch (its stream sequence)
    /// or refused it (why): an async request is answered 202 only once it
    /// is in the queue. Dropped unsent only when the gateway stops.
    pub stored: Option<oneshot::Sender<Result<u64, String>>>,
}

/// Requests of one model, task and priority that leave the batcher together.
#[derive(Debug)]
pub struct Batch {
    /// The model every request in it runs on.
    pub model: ModelName,
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
    tx: mpsc::Sender<Sized>,
    max_bytes: usize,
    max_tokens: usize,
}

/// Why the batcher did not take a request.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The batcher task has stopped (the gateway is shutting down).
    #[error("the batcher has stopped")]
    Stopped,
    /// The request would cost more model tokens than `MAX_REQUEST_TOKENS`.
    #[error("the request would cost about {tokens} model tokens; at most {limit} are allowed (MAX_REQUEST_TOKENS)")]
    TooCostly {
        /// Its estimated tokens.
        tokens: usize,
        /// `MAX_REQUEST_TOKENS`.
        limit: usize,
    },
    /// The request alone takes more bytes than a batch may hold, so no batch
    /// could ever carry it.
    #[error("the request takes {size} bytes; a batch holds at most {limit}")]
    TooLarge {
        /// Its encoded size in a batch.
        size: usize,
        /// Bytes a batch may hold.
        limit: usize,
    },
}

/// A request with its encoded size and estimated cost, measured once at submission.
struct Sized {
    queued: Queued,
    bytes: usize,
    tokens: usize,
}

impl Batcher {
    /// Start the batcher task; it flushes everything and ends when every handle
    /// is dropped. No batch it flushes holds more than `max_bytes` of encoded
    /// requests (the task message's limit less its envelope).
    pub fn spawn(
        args: BatchArgs,
        max_bytes: usize,
        unanswered: impl Unanswered,
        sink: impl BatchSink,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(args, max_bytes, rx, unanswered, sink));
        Self {
            tx,
            max_bytes,
            max_tokens: args.max_request_tokens,
        }
    }

    /// Hand a request to the batcher; one that would cost too much, or could
    /// never fit in a batch, is refused here, before anything is queued.
    pub async fn submit(&self, queued: Queued) -> Result<(), SubmitError> {
        let tokens = queued.item.input.estimated_tokens();
        if tokens > self.max_tokens {
            return Err(SubmitError::TooCostly {
                tokens,
                limit: self.max_tokens,
            });
        }
        let bytes = protocol::encode(&queued.item).map_or(usize::MAX, |b| b.len());
        if bytes > self.max_bytes {
            return Err(SubmitError::TooLarge {
                size: bytes,
                limit: self.max_bytes,
            });
        }
        self.tx
            .send(Sized {
                queued,
                bytes,
                tokens,
            })
            .await
            .map_err(|_| SubmitError::Stopped)
    }
}

/// Priority first, so a flush of everything sends `high` queues first.
type Key = (Priority, ModelName, Task);

struct Queue {
    items: Vec<Queued>,
    bytes: usize,
    tokens: usize,
    /// When its oldest request came.
    since: Instant,
    /// When its newest request came.
    newest: Instant,
}

/// How full a batch may get: past either bound the queue is flushed first.
#[derive(Clone, Copy)]
struct Room {
    /// Encoded request bytes one task message can carry.
    bytes: usize,
    /// Estimated model tokens (`MAX_REQUEST_TOKENS`): a batch costs a worker
    /// no more than one request may, so small requests never ride along with a
    /// heavy one and wait out its pass; the next idle worker takes them.
    tokens: usize,
}

async fn run(
    args: BatchArgs,
    max_bytes: usize,
    mut rx: mpsc::Receiver<Sized>,
    unanswered: impl Unanswered,
    sink: impl BatchSink,
) {
    let max = args.batch_max_size as usize;
    let room = Room {
        bytes: max_bytes,
        tokens: args.max_request_tokens,
    };
    let mut queues: BTreeMap<Key, Queue> = BTreeMap::new();
    // Workers are idle and a queue waits out its linger.
    let mut lingering = false;
    loop {
        if lingering {
            // Clients answered together come back microseconds apart, and
            // tokio's timers tick in milliseconds: the linger is a loop of
            // yields instead (the runtime polls its I/O between them), so a
            // lone request waits `BATCH_LINGER_US`, not a millisecond more.
            tokio::task::yield_now().await;
            match rx.try_recv() {
                Ok(sized) => take(&mut queues, sized, &mut rx, max, room, &sink),
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            let oldest = queues.values().map(|q| q.since).min();
            tokio::select! {
                next = rx.recv() => match next {
                    Some(sized) => take(&mut queues, sized, &mut rx, max, room, &sink),
                    None => break,
                },
                _ = tokio::time::sleep_until(oldest.unwrap_or_else(Instant::now) + args.max_wait()), if oldest.is_some() => {}
            }
        }
        let buffered: usize = queues.values().map(|q| q.items.len()).sum();
        let idle = unanswered.unanswered() <= buffered;
        let now = Instant::now();
        let due: Vec<Key> = queues
            .iter()
            .filter(|(_, q)| {
                q.items.len() >= max
                    || now - q.since >= args.max_wait()
                    || (idle && now - q.newest >= args.linger())
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(queue) = queues.remove(&key) {
                flush(&key, queue.items, max, &sink);
            }
        }
        lingering = idle && !queues.is_empty();
    }
    for (key, queue) in std::mem::take(&mut queues) {
        flush(&key, queue.items, max, &sink);
    }
}

/// Queue `first` and whatever else already arrived, so a burst forms full batches.
fn take(
    queues: &mut BTreeMap<Key, Queue>,
    first: Sized,
    rx: &mut mpsc::Receiver<Sized>,
    max: usize,
    room: Room,
    sink: &impl BatchSink,
) {
    push(queues, first, max, room, sink);
    while let Ok(sized) = rx.try_recv() {
        push(queues, sized, max, room, sink);
    }
}

/// Queue a request; a queue that it would take past its [`Room`] is flushed
/// first, so every batch fits in one task message and costs no more than one
/// request may.
fn push(
    queues: &mut BTreeMap<Key, Queue>,
    sized: Sized,
    max: usize,
    room: Room,
    sink: &impl BatchSink,
) {
    let Sized {
        queued,
        bytes,
        tokens,
    } = sized;
    let key = (
        queued.priority,
        queued.model.clone(),
        queued.item.input.task(),
    );
    if queues
        .get(&key)
        .is_some_and(|q| q.bytes + bytes > room.bytes || q.tokens + tokens > room.tokens)
    {
        if let Some(full) = queues.remove(&key) {
            flush(&key, full.items, max, sink);
        }
    }
    let now = Instant::now();
    let queue = queues.entry(key).or_insert_with(|| Queue {
        items: Vec::new(),
        bytes: 0,
        tokens: 0,
        since: now,
        newest: now,
    });
    queue.newest = now;
    queue.bytes += bytes;
    queue.tokens += tokens;
    queue.items.push(queued);
}

/// Hand `items` to the sink in batches of at most `max`.
fn flush(key: &Key, mut items: Vec<Queued>, max: usize, sink: &impl BatchSink) {
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(max));
        sink.accept(Batch {
            model: key.1.clone(),
            task: key.2,
            priority: key.0,
            items: std::mem::replace(&mut items, rest),
        });
    }
}
