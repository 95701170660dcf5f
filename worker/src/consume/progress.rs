//! Progress acks: a slow-but-alive worker keeps its batches.
//!
//! JetStream redelivers a batch whose ack wait passes without word from its
//! worker. While a batch waits for the compute slot or is being computed, the
//! worker sends `AckProgress` on it every half ack wait, so only a worker that
//! is dead or hung (silent) loses its batches.

use async_nats::jetstream::{AckKind, Message};
use std::future::Future;
use std::time::Duration;

/// The messages to keep alive, and how often.
pub struct Progress<'a> {
    msgs: &'a [&'a Message],
    every: Duration,
}

impl<'a> Progress<'a> {
    /// Keep `msgs` alive every `every` while a future runs under [`Progress::during`].
    pub fn new(msgs: &'a [&'a Message], every: Duration) -> Self {
        Self { msgs, every }
    }

    /// Poll `fut` to completion, sending AckProgress on every message each `every`.
    pub async fn during<F: Future>(&self, fut: F) -> F::Output {
        tokio::pin!(fut);
        let start = tokio::time::Instant::now() + self.every;
        let mut tick = tokio::time::interval_at(start, self.every);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = tick.tick() => {
                    for msg in self.msgs {
                        if let Err(e) = msg.ack_with(AckKind::Progress).await {
                            tracing::debug!(error = %e, "progress ack failed");
                        }
                    }
                }
            }
        }
    }
}
