//! Pulling: a worker asks JetStream for work only while its compute slot is
//! free, and withdraws every question the moment one is answered, so a busy
//! worker holds no batch that an idle one could start (load-aware dispatch
//! without any registry).
//!
//! An idle worker has one pull request waiting on each of its consumers
//! (task × priority). The first batch delivered is computed at once; the
//! other requests are drained (UNSUB, then a PING: whatever the server sent
//! before it saw the UNSUB still arrives and is kept, nothing is stranded
//! until its ack wait). Only a batch delivered in that one round trip waits
//! behind the pass, with progress acks. With dynamic batching on, batches
//! already queued behind the one pulled are taken along to be computed together.

use super::Processor;
use async_nats::jetstream::consumer::pull::BatchError;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, Message};
use async_nats::{StatusCode, Subscriber};
use futures::future::select_all;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the pull for extra queued batches may wait (they were queued a moment ago).
const QUEUED_WAIT: Duration = Duration::from_millis(20);

/// How long one pull request waits for a batch before the server says 408 and
/// the worker asks again.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// A request with no word from the server this long after it expired was lost
/// (a reconnect) and is asked again.
const PULL_GRACE: Duration = Duration::from_secs(1);

/// How long to wait after the server refused a pull (409: consumer deleted,
/// too many waiting) before asking that consumer again.
const REFUSED_PAUSE: Duration = Duration::from_millis(500);

/// Longest wait for withdrawn pull requests to be confirmed; past it (NATS
/// unreachable) anything still on its way is left to JetStream's redelivery.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// One work consumer this worker serves.
pub struct Source {
    /// Durable consumer name (`work-<task>-<priority>`).
    pub name: String,
    /// The consumer, for taking queued batches along.
    pub consumer: PullConsumer,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`: where pull requests go.
    next_subject: String,
}

impl Source {
    /// A source for `consumer` (named `name`) of a stream in the default JetStream domain.
    pub fn new(name: String, consumer: PullConsumer) -> Self {
        let stream = consumer.cached_info().stream_name.clone();
        Self {
            next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"),
            name,
            consumer,
        }
    }
}

/// The pull request waiting on one source, and its reply inbox.
struct Ask {
    sub: Subscriber,
    inbox: String,
    /// When to ask (again): past the request's expiry, or after a refusal.
    due: Instant,
}

/// Where the worker's pull requests go and its batches come from.
pub struct Pulling {
    /// The worker's NATS connection (pull requests are core requests).
    pub client: async_nats::Client,
    /// For acking what arrives.
    pub js: jetstream::Context,
    /// The worker's consumers, most urgent first: when two batches are ready
    /// at once, the earlier source's is computed first.
    pub sources: Vec<Source>,
}

impl Processor {
    /// Serve `pulling`'s consumers until `stop` fires; a batch already pulled is finished.
    ///
    /// An idle worker waits for one batch; once it has it, it also takes (without
    /// waiting) up to [`Processor::merge_batches`] − 1 more that are already queued
    /// on the same consumer, and computes them together in forward passes of at
    /// most `max_batch_tokens`.
    pub async fn serve(self: Arc<Self>, pulling: Pulling, stop: CancellationToken) {
        loop {
            let mut asks = Vec::with_capacity(pulling.sources.len());
            for source in &pulling.sources {
                let inbox = pulling.client.new_inbox();
                match pulling.client.subscribe(inbox.clone()).await {
                    Ok(sub) => asks.push(Ask {
                        sub,
                        inbox,
                        due: Instant::now(),
                    }),
                    Err(e) => {
                        tracing::warn!(consumer = %source.name, error = %e, "cannot subscribe for pulls")
                    }
                }
            }
            if asks.len() < pulling.sources.len() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(REFUSED_PAUSE) => continue,
                }
            }
            let (index, first) = tokio::select! {
                _ = stop.cancelled() => return,
                first = pulling.first_delivery(&mut asks) => first,
            };
            let withdrawn = collect_late(withdraw(asks).await, pulling.js.clone());
            let mut held = vec![first];
            self.take_queued(&pulling.sources[index], &mut held).await;
            // The first batch computes while the withdrawal is confirmed; a batch
            // that slipped in before the server saw it waits its turn for the slot.
            tokio::join!(self.handle(held), async {
                let late = tokio::select! {
                    late = tokio::time::timeout(DRAIN_LIMIT, withdrawn) => late.unwrap_or_default(),
                    _ = stop.cancelled() => Vec::new(),
                };
                if !late.is_empty() {
                    tracing::debug!(
                        batches = late.len(),
                        "batches delivered while withdrawing pulls"
                    );
                    self.handle(late).await;
                }
            });
        }
    }

    /// With dynamic batching on, add to `held` the batches already queued
    /// behind its first on `source`. JetStream says how many wait behind it;
    /// ask only then, so a lone batch never waits for companions.
    async fn take_queued(&self, source: &Source, held: &mut Vec<Message>) {
        let behind = held[0].info().map_or(0, |i| i.pending as usize);
        if self.merge_batches <= 1 || behind == 0 {
            return;
        }
        let more = behind.min(self.merge_batches - 1);
        match fetch(&source.consumer, more, QUEUED_WAIT).await {
            Ok(more) => held.extend(more),
            Err(e) => tracing::debug!(consumer = %source.name, error = %e, "no extra batches"),
        }
    }
}

impl Pulling {
    /// Keep one pull request waiting on every source until a batch arrives;
    /// returns the index of its source and the batch.
    async fn first_delivery(&self, asks: &mut [Ask]) -> (usize, Message) {
        loop {
            let now = Instant::now();
            for (source, ask) in self.sources.iter().zip(asks.iter_mut()) {
                if ask.due <= now {
                    self.ask(source, ask).await;
                }
            }
            let next_due = asks.iter().map(|a| a.due).min().unwrap_or(now);
            let arrivals = asks
                .iter_mut()
                .enumerate()
                .map(|(i, ask)| Box::pin(async move { (i, ask.sub.next().await) }));
            let Ok(((index, got), _, _)) =
                tokio::time::timeout_at(next_due, select_all(arrivals)).await
            else {
                continue; // a request is due again
            };
            let Some(msg) = got else {
                // The subscription closed under us (client closing): ask again later.
                asks[index].due = Instant::now() + REFUSED_PAUSE;
                continue;
            };
            match msg.status {
                None => return (index, self.jetstream_message(msg)),
                Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => {
                    asks[index].due = Instant::now();
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(status) => {
                    tracing::warn!(consumer = %self.sources[index].name, %status, description = ?msg.description, "pull refused; asking again shortly");
                    asks[index].due = Instant::now() + REFUSED_PAUSE;
                }
            }
        }
    }

    /// Send one pull request for a single batch on `source`, replying to `ask`'s inbox.
    async fn ask(&self, source: &Source, ask: &mut Ask) {
        let request = serde_json::json!({
            "batch": 1,
            "expires": PULL_EXPIRES.as_nanos() as u64,
        });
        ask.due = Instant::now() + PULL_EXPIRES + PULL_GRACE;
        if let Err(e) = self
            .client
            .publish_with_reply(
                source.next_subject.clone(),
                ask.inbox.clone(),
                request.to_string().into(),
            )
            .await
        {
            tracing::warn!(consumer = %source.name, error = %e, "pull request failed; retrying");
            ask.due = Instant::now() + REFUSED_PAUSE;
        }
    }

    /// A delivered batch, ackable through the worker's JetStream context.
    fn jetstream_message(&self, message: async_nats::Message) -> Message {
        Message {
            message,
            context: self.js.clone(),
        }
    }
}

/// Withdraw every pull request: UNSUB each inbox, then a PING. The answered
/// request is done, but a stale one may share its inbox, so it is drained too.
async fn withdraw(asks: Vec<Ask>) -> Vec<Subscriber> {
    let mut subs: Vec<Subscriber> = asks.into_iter().map(|a| a.sub).collect();
    for sub in &mut subs {
        if let Err(e) = sub.drain().await {
            tracing::debug!(error = %e, "drain failed");
        }
    }
    subs
}

/// The batches the server sent before it saw the UNSUBs of [`withdraw`]:
/// real deliveries, so they must be computed, not dropped. Each drained
/// subscription ends once the server's PONG confirms the UNSUB.
async fn collect_late(mut subs: Vec<Subscriber>, js: jetstream::Context) -> Vec<Message> {
    let mut late = Vec::new();
    for sub in &mut subs {
        while let Some(message) = sub.next().await {
            if message.status.is_none() {
                late.push(Message {
                    message,
                    context: js.clone(),
                });
            }
        }
    }
    late
}

/// Up to `count` messages from `consumer`, waiting at most `expires` for them;
/// an error only when the pull request itself could not be made.
async fn fetch(
    consumer: &PullConsumer,
    count: usize,
    expires: Duration,
) -> Result<Vec<Message>, BatchError> {
    let pulled = consumer
        .batch()
        .max_messages(count)
        .expires(expires)
        .messages()
        .await;
    let mut messages = pulled?;
    let mut held = Vec::new();
    while let Some(next) = messages.next().await {
        match next {
            Ok(msg) => held.push(msg),
            Err(e) => {
                tracing::debug!(error = %e, "pull ended");
                break;
            }
        }
    }
    Ok(held)
}
