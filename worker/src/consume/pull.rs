//! Pulling: a worker asks JetStream for work only while its compute slot is
//! free, and withdraws every question once one is answered by a batch that
//! takes a while, so a busy worker holds no batch that an idle one could
//! start (load-aware dispatch without any registry).
//!
//! An idle worker has one pull request waiting on each of its consumers
//! (task × priority), each on a reply inbox of its own, so an inbox is
//! answered at most once: a batch, or a status that ends the request. The
//! first batch delivered is computed at once; the other requests are
//! withdrawn with a fence: an UNSUB that lets exactly one more message
//! through, then an empty message the worker publishes to that inbox itself,
//! which the server delivers after every message it sent there before it
//! saw the UNSUB. Whatever arrives before the fence is kept: nothing is
//! stranded until its ack wait. async-nats's own `Subscriber::drain` does not
//! do this: it forgets the subscription as soon as its UNSUB is written, and
//! a batch still on the wire was lost until JetStream redelivered it. Only a
//! batch delivered in that one round trip waits behind the pass, with
//! progress acks. A batch expected to be quick (its consumer's last one was
//! handled within [`HOLD_OPEN`]) leaves the other requests open instead: it
//! is done before a withdrawal would be, and the requests serve the next
//! batch too. With dynamic batching on, batches already queued behind the
//! one pulled are taken along to be computed together.

use super::Processor;
use crate::lease::{ComputeLease, Turn};
use async_nats::jetstream::consumer::pull::BatchError;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, Message};
use async_nats::{StatusCode, Subscriber};
use futures::future::{select_all, BoxFuture};
use futures::{FutureExt, StreamExt};
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

/// How long a worker holding the compute lease waits for work before it
/// hands the lease on (well under the patience of the workers waiting for it).
const IDLE_TURN: Duration = Duration::from_secs(1);

/// Pause after handing the lease on, so a worker waiting for it gets it
/// before this one asks again.
const HANDOVER: Duration = Duration::from_millis(10);

/// Longest wait for withdrawn pull requests to be confirmed; past it (NATS
/// unreachable) anything still on its way is left to JetStream's redelivery.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// A batch whose consumer's last batch was handled (computed and handed to
/// delivery) within this leaves the worker's other pull requests open while
/// it is handled; they are withdrawn only if it takes longer after all. For
/// batches this quick, withdrawing and renewing a request on every other
/// consumer (one UNSUB, one fence and one pull request each, per batch) cost
/// nats-server more than the batch itself. A batch that arrives on an open
/// request meanwhile is computed after this one, as one that slipped in
/// before a withdrawal is.
const HOLD_OPEN: Duration = Duration::from_millis(2);

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

/// The pull request waiting on one source.
struct Ask {
    /// The request's own reply inbox; `None` once the request was answered
    /// (or could not be made).
    sub: Option<Subscriber>,
    /// The subject of that inbox, for the withdrawal fence.
    inbox: String,
    /// When to ask (again): past the request's expiry, or after a refusal.
    due: Instant,
}

impl Ask {
    /// No request on any of `n` sources yet: each is due at once.
    fn none(n: usize) -> Vec<Self> {
        (0..n)
            .map(|_| Self {
                sub: None,
                inbox: String::new(),
                due: Instant::now(),
            })
            .collect()
    }
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
    /// The machine's compute lease, if its workers take turns: no pull
    /// request goes out until this worker holds it.
    pub lease: Option<ComputeLease>,
}

impl Processor {
    /// Serve `pulling`'s consumers until `stop` fires; a batch already pulled
    /// is finished: computed, its result stored and its task acked.
    ///
    /// An idle worker waits for one batch; once it has it, it also takes (without
    /// waiting) up to [`Processor::merge_batches`] − 1 more that are already queued
    /// on the same consumer, and computes them together in forward passes of at
    /// most `max_batch_tokens`.
    pub async fn serve(self: Arc<Self>, pulling: Pulling, stop: CancellationToken) {
        self.pull_until(&pulling, &stop).await;
        self.delivered().await;
    }

    /// The pull loop of [`Processor::serve`]; the last pass may still be
    /// delivering when it returns.
    async fn pull_until(self: &Arc<Self>, pulling: &Pulling, stop: &CancellationToken) {
        // The turn at the compute lease, kept from batch to batch until it is
        // `max_turn` old: consecutive batches then run on a worker whose weights
        // and pool are warm, instead of rotating over every worker.
        let max_turn = pulling
            .lease
            .as_ref()
            .map_or(Duration::ZERO, ComputeLease::max_turn);
        let mut turn: Option<(Turn, Instant)> = None;
        // The pull requests, kept open from batch to batch while batches are
        // handled within `HOLD_OPEN`; `quick[i]`: whether source i's last
        // batch was (false until it had one).
        let mut asks = Ask::none(pulling.sources.len());
        let mut quick = vec![false; pulling.sources.len()];
        loop {
            if turn
                .as_ref()
                .is_some_and(|(_, since)| since.elapsed() >= max_turn)
            {
                self.withdraw_all(pulling, &mut asks, stop).await;
                turn = None;
                tokio::time::sleep(HANDOVER).await;
            }
            if turn.is_none() {
                if let Some(lease) = &pulling.lease {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        taken = lease.take() => turn = Some((taken, Instant::now())),
                    }
                }
            }
            let idle_until =
                matches!(turn, Some((Turn::Held(_), _))).then(|| Instant::now() + IDLE_TURN);
            let first = tokio::select! {
                _ = stop.cancelled() => {
                    // A batch already in an inbox is computed, not dropped:
                    // the drain is not cut short by the stop itself.
                    self.withdraw_all(pulling, &mut asks, &CancellationToken::new()).await;
                    return;
                }
                first = pulling.first_delivery(&mut asks, idle_until) => first,
            };
            let Some((index, first)) = first else {
                // A whole turn without work: hand the lease on, so the workers
                // waiting for it never take an idle holder for a stuck one.
                self.withdraw_all(pulling, &mut asks, stop).await;
                turn = None;
                tokio::time::sleep(HANDOVER).await;
                continue;
            };
            // Not expected to be quick: withdrawn at once, before queued
            // batches are taken along.
            let early = if quick[index] {
                None
            } else {
                Some(pulling.withdrawal(&mut asks).await)
            };
            // How long the batch itself takes (queued ones taken along, the
            // pass), withdrawals and late batches aside.
            let source = &pulling.sources[index];
            let handling = async {
                let began = Instant::now();
                let mut held = vec![first];
                self.take_queued(source, &mut held).await;
                self.handle(held).await;
                began.elapsed()
            };
            tokio::pin!(handling);
            let withdrawn = match early {
                Some(withdrawn) => withdrawn,
                None => {
                    // Likely done before a withdrawal would be: the other
                    // requests stay open, unless it takes longer after all.
                    if let Ok(took) = tokio::time::timeout(HOLD_OPEN, &mut handling).await {
                        quick[index] = took < HOLD_OPEN;
                        continue;
                    }
                    pulling.withdrawal(&mut asks).await
                }
            };
            // The batch computes while the withdrawal is confirmed; a batch
            // that slipped in before the server saw it waits its turn for the slot.
            let (took, ()) = tokio::join!(handling, self.handle_late(withdrawn, stop));
            quick[index] = took < HOLD_OPEN;
        }
    }

    /// Withdraw every open pull request and compute what arrived meanwhile.
    async fn withdraw_all(
        self: &Arc<Self>,
        pulling: &Pulling,
        asks: &mut Vec<Ask>,
        stop: &CancellationToken,
    ) {
        let withdrawn = pulling.withdrawal(asks).await;
        self.handle_late(withdrawn, stop).await;
    }

    /// Compute the batches that arrived while pull requests were withdrawn.
    async fn handle_late(
        self: &Arc<Self>,
        withdrawn: impl std::future::Future<Output = Vec<Message>>,
        stop: &CancellationToken,
    ) {
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
    /// returns the index of its source and the batch, or `None` if `until`
    /// came first.
    async fn first_delivery(
        &self,
        asks: &mut [Ask],
        until: Option<Instant>,
    ) -> Option<(usize, Message)> {
        loop {
            let now = Instant::now();
            if until.is_some_and(|until| until <= now) {
                return None;
            }
            for (source, ask) in self.sources.iter().zip(asks.iter_mut()) {
                if ask.due <= now {
                    self.ask(source, ask).await;
                }
            }
            let next_due = asks.iter().map(|a| a.due).chain(until).min().unwrap_or(now);
            let arrivals: Vec<_> = asks
                .iter_mut()
                .enumerate()
                .filter_map(|(i, ask)| ask.sub.as_mut().map(|sub| (i, sub)))
                .map(|(i, sub)| Box::pin(async move { (i, sub.next().await) }))
                .collect();
            if arrivals.is_empty() {
                tokio::time::sleep_until(next_due).await;
                continue;
            }
            let Ok(((index, got), _, _)) =
                tokio::time::timeout_at(next_due, select_all(arrivals)).await
            else {
                continue; // a request is due again
            };
            let ask = &mut asks[index];
            let Some(msg) = got else {
                // The subscription closed under us (client closing): ask again later.
                ask.sub = None;
                ask.due = Instant::now() + REFUSED_PAUSE;
                continue;
            };
            if msg.status == Some(StatusCode::IDLE_HEARTBEAT) {
                continue; // not an answer: the request still waits
            }
            // Any other message ends the request, so its inbox is done with.
            ask.sub = None;
            match msg.status {
                None => {
                    // Asked again as soon as this worker is ready for more.
                    ask.due = Instant::now();
                    return Some((index, self.jetstream_message(msg)));
                }
                Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => {
                    ask.due = Instant::now();
                }
                Some(status) => {
                    tracing::warn!(consumer = %self.sources[index].name, %status, description = ?msg.description, "pull refused; asking again shortly");
                    ask.due = Instant::now() + REFUSED_PAUSE;
                }
            }
        }
    }

    /// Send one pull request for a single batch on `source`, on a fresh reply
    /// inbox (a request still open on the old one, lost in a reconnect, can
    /// then only reach an inbox nobody listens to, which the server skips).
    async fn ask(&self, source: &Source, ask: &mut Ask) {
        ask.sub = None;
        ask.due = Instant::now() + REFUSED_PAUSE;
        ask.inbox = self.client.new_inbox();
        let sub = match self.client.subscribe(ask.inbox.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                return tracing::warn!(consumer = %source.name, error = %e, "cannot subscribe for pulls")
            }
        };
        let request = serde_json::json!({
            "batch": 1,
            "expires": PULL_EXPIRES.as_nanos() as u64,
        });
        if let Err(e) = self
            .client
            .publish_with_reply(
                source.next_subject.clone(),
                ask.inbox.clone(),
                request.to_string().into(),
            )
            .await
        {
            return tracing::warn!(consumer = %source.name, error = %e, "pull request failed; retrying");
        }
        ask.sub = Some(sub);
        ask.due = Instant::now() + PULL_EXPIRES + PULL_GRACE;
    }

    /// Withdraw every request open in `asks`, each source then due at once;
    /// the future returned gives the batches that slipped in before the
    /// server saw the withdrawal.
    async fn withdrawal(&self, asks: &mut Vec<Ask>) -> BoxFuture<'static, Vec<Message>> {
        let open = std::mem::replace(asks, Ask::none(asks.len()));
        collect_late(self.withdraw(open).await, self.js.clone()).boxed()
    }

    /// Withdraw every request still open: on each inbox, an UNSUB that lets
    /// one more message through, then the fence, an empty message to that
    /// inbox (the worker may publish to its own inboxes only). The server
    /// handles both in order, so that one message is either a batch it sent
    /// before it saw the UNSUB or the fence; the subscription then ends by
    /// itself. (A `$JS.API.INFO` request replying to the inbox also works but
    /// cost the JetStream API 7 calls per batch; a request nobody serves does
    /// not, as nats-server writes its "no responders" past the count an
    /// `UNSUB <sid> 1` waits for, so the server kept the inbox open.)
    async fn withdraw(&self, asks: Vec<Ask>) -> Vec<Subscriber> {
        let mut open = Vec::new();
        for ask in asks {
            let Some(mut sub) = ask.sub else { continue };
            if let Err(e) = sub.unsubscribe_after(1).await {
                tracing::debug!(error = %e, "withdrawal failed");
                continue; // the connection is closing: nothing more arrives
            }
            let fence = self.client.publish(ask.inbox, "".into()).await;
            if let Err(e) = fence {
                tracing::debug!(error = %e, "fence failed; the request's expiry ends the inbox");
            }
            open.push(sub);
        }
        open
    }

    /// A delivered batch, ackable through the worker's JetStream context.
    fn jetstream_message(&self, message: async_nats::Message) -> Message {
        Message {
            message,
            context: self.js.clone(),
        }
    }
}

/// The batches the server sent before it saw the UNSUBs of
/// [`Pulling::withdraw`]: real deliveries, so they must be computed, not
/// dropped. Each withdrawn subscription ends after its one last message.
async fn collect_late(mut subs: Vec<Subscriber>, js: jetstream::Context) -> Vec<Message> {
    let mut late = Vec::new();
    for sub in &mut subs {
        while let Some(message) = sub.next().await {
            // A batch carries its ack subject; a status or the fence does not.
            if message.status.is_none() && message.reply.is_some() {
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
