//! The consume path on a real nats-server with the toy embedder: no model
//! files, so these run in milliseconds and pin what each step does.

use super::deferred::AsyncResults;
use super::publish::ResultPublisher;
use super::pull::{Pulling, Source};
use super::report::Report;
use super::{Processor, MERGE_BATCHES};
use crate::answers::Model;
use crate::backend::thread::{BackendThread, Loaded};
use crate::backend::toy::{toy_embedding, ToyEmbedder};
use crate::counters::Counters;
use crate::events::Events;
use crate::faults::{FaultArgs, Faults, FaultyModel, FaultyResults};
use crate::lease::{ComputeLease, Turn};
use crate::models::Choice;
use async_nats::jetstream;
use clap::Parser;
use futures::StreamExt;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::dead;
use jetinfer_shared::protocol::{
    self, BatchItem, ItemOutcome, ModelName, Priority, ResultBatch, Task, TaskBatch, TaskInput,
    TaskOutput,
};
use jetinfer_shared::subjects;
use jetinfer_shared::topology::{self, TopologyArgs};
use jetinfer_testsupport::{wait_for, CutProxy, NatsServer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);
const REPLY: &str = "infer.result.consume-test";

#[derive(Parser)]
struct Topology {
    #[command(flatten)]
    args: TopologyArgs,
}

/// A worker's consume path for `embed`/normal on its own nats-server.
struct Rig {
    /// Kept alive for the test.
    _nats: NatsServer,
    /// The worker's slow link to the server, when the test asked for one.
    _link: Option<CutProxy>,
    admin: async_nats::Client,
    processor: Arc<Processor>,
    passes: Arc<AtomicUsize>,
    counters: Counters,
    /// The worker's connection, for its pull requests.
    worker: async_nats::Client,
    /// The embed consumers, high priority first, as a worker lists them.
    consumers: Vec<(String, jetstream::consumer::PullConsumer)>,
    stop: CancellationToken,
}

impl Rig {
    /// A rig with an ack wait of 3 s: long enough that a test asserting
    /// first-time answers does not see a redelivery because the suite starved
    /// the worker of CPU for a moment (with 300 ms it once did).
    async fn new(faults: FaultArgs, max_batch_tokens: usize) -> Self {
        Self::build(faults, max_batch_tokens, None, "3000").await
    }

    /// A rig with an ack wait of 300 ms, for tests waiting for a redelivery.
    async fn redelivering(faults: FaultArgs) -> Self {
        Self::build(faults, 0, None, "300").await
    }

    /// A rig whose worker hears the server `delay` late (ack wait 3 s, so a
    /// batch that slow link delays is not redelivered for that alone).
    async fn over_slow_link(delay: Duration, faults: FaultArgs) -> Self {
        Self::build(faults, 0, Some(delay), "3000").await
    }

    async fn build(
        faults: FaultArgs,
        max_batch_tokens: usize,
        delay: Option<Duration>,
        ack_wait_ms: &str,
    ) -> Self {
        let nats = NatsServer::start();
        let link = match delay {
            Some(delay) => Some(CutProxy::delaying(nats.addr(), delay).await),
            None => None,
        };
        let url = link.as_ref().map_or_else(|| nats.url(), CutProxy::url);
        let worker = nats.options("w1").connect(url).await.expect("worker login");
        let admin = nats.client().await;
        let js = jetstream::new(worker.clone());
        let topo =
            Topology::parse_from(["t", "--ack-wait-ms", ack_wait_ms, "--backoff-ms", "none"]).args;
        let stream = topology::ensure_streams(&js, &topo).await.expect("streams");
        let mut consumers = Vec::new();
        for priority in Priority::ALL {
            let consumer =
                topology::ensure_work_consumer(&stream, &topo, &toy_model(), Task::Embed, priority)
                    .await
                    .expect("consumer");
            consumers.push((
                subjects::work_consumer(&toy_model(), Task::Embed, priority),
                consumer,
            ));
        }
        let toy = ToyEmbedder::default();
        let passes = toy.passes.clone();
        let loaded = Loaded {
            text: Some(Box::new(toy)),
            image: None,
        };
        let backend = BackendThread::spawn(loaded, 1).expect("toy backend");
        let choice = Choice {
            text: Some(toy_model()),
            image: None,
            tasks: vec![Task::Embed],
        };
        let faults = Arc::new(Faults::new(faults));
        let counters = Counters::default();
        let processor = Arc::new(Processor {
            js: js.clone(),
            model: FaultyModel::new(
                Model::new(backend, choice, 0.05),
                faults.clone(),
                Duration::from_secs(1),
            ),
            results: FaultyResults::new(
                ResultPublisher::new(
                    js.clone(),
                    "w1".into(),
                    AsyncResults::new(js.clone(), "w1".into()),
                ),
                faults,
            ),
            deferred: AsyncResults::new(js, "w1".into()),
            report: Report::new(
                Events::new(worker.clone(), "w1".into()),
                counters.clone(),
                "w1".into(),
            ),
            worker_id: "w1".into(),
            progress_every: Duration::from_millis(100),
            slot: tokio::sync::Semaphore::new(1),
            merge_batches: if max_batch_tokens == 0 {
                1
            } else {
                MERGE_BATCHES
            },
            max_batch_tokens,
            delivering: Default::default(),
        });
        Self {
            _nats: nats,
            _link: link,
            admin,
            processor,
            passes,
            counters,
            worker,
            consumers,
            stop: CancellationToken::new(),
        }
    }

    /// Start pulling (tests publish first when they need a backlog).
    fn pull(&self) {
        self.pull_taking_turns(None);
    }

    /// Start pulling, only while holding `lease` when one is given.
    fn pull_taking_turns(&self, lease: Option<ComputeLease>) {
        let pulling = Pulling {
            client: self.worker.clone(),
            js: jetstream::new(self.worker.clone()),
            sources: self
                .consumers
                .iter()
                .map(|(name, consumer)| Source::new(name.clone(), consumer.clone()))
                .collect(),
            lease,
        };
        tokio::spawn(self.processor.clone().serve(pulling, self.stop.clone()));
    }

    async fn publish(&self, payload: Vec<u8>) {
        self.publish_to(Priority::Normal, payload).await;
    }

    async fn publish_to(&self, priority: Priority, payload: Vec<u8>) {
        jetstream::new(self.admin.clone())
            .publish(
                subjects::task_subject(&toy_model(), Task::Embed, priority),
                payload.into(),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    /// (waiting, delivered and unacked) on the `priority` embed consumer.
    async fn consumer_state(&self, priority: Priority) -> (u64, usize) {
        let info = self.consumer_info(priority).await;
        (info.num_pending, info.num_ack_pending)
    }

    async fn consumer_info(&self, priority: Priority) -> jetstream::consumer::Info {
        let js = jetstream::new(self.admin.clone());
        let stream = js.get_stream(subjects::TASK_STREAM).await.expect("stream");
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(&subjects::work_consumer(
                &toy_model(),
                Task::Embed,
                priority,
            ))
            .await
            .expect("consumer");
        consumer.info().await.expect("consumer info").clone()
    }

    /// `high` and `normal` were each answered on their first delivery (none
    /// stranded until its ack wait), and nothing is left.
    async fn both_answered_first_time(
        &self,
        results: &mut async_nats::Subscriber,
        high: &TaskBatch,
        normal: &TaskBatch,
    ) {
        let mut answered = [next_result(results).await, next_result(results).await];
        answered.sort_by_key(|r| r.batch_id != high.batch_id);
        assert_eq!(
            answered
                .iter()
                .map(|r| (r.batch_id, r.attempt))
                .collect::<Vec<_>>(),
            vec![(high.batch_id, 1), (normal.batch_id, 1)],
            "(batch, attempt) of the high and the normal batch"
        );
        self.stream_empty().await;
        assert_eq!(self.counters.snapshot().redelivered, 0);
    }

    /// Publish a batch on the high queue while the worker is busy: for
    /// `watched` it must stay queued there for someone else, the busy worker
    /// holding no pull request on it. Returns the batch.
    async fn high_batch_stays_queued(&self, watched: Duration) -> TaskBatch {
        let mut high = batch(&["a small one"], later());
        high.priority = Priority::High;
        self.publish_to(Priority::High, protocol::encode(&high).unwrap())
            .await;
        tokio::time::sleep(watched).await;
        assert_eq!(
            self.consumer_state(Priority::High).await,
            (1, 0),
            "(waiting, delivered) on the other queue while the worker is busy"
        );
        high
    }

    /// Pull requests waiting on a consumer.
    async fn waiting_pulls(&self, priority: Priority) -> usize {
        self.consumer_info(priority).await.num_waiting
    }

    async fn stream_empty(&self) {
        let js = jetstream::new(self.admin.clone());
        wait_for("the task stream to empty", LIMIT, || async {
            let mut stream = js.get_stream(subjects::TASK_STREAM).await.ok()?;
            (stream.info().await.ok()?.state.messages == 0).then_some(())
        })
        .await;
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The text model the toy backend stands for.
fn toy_model() -> ModelName {
    "toy".parse().expect("a model name")
}

fn batch(texts: &[&str], deadline_ms: u64) -> TaskBatch {
    TaskBatch {
        batch_id: uuid::Uuid::new_v4(),
        model: toy_model(),
        task: Task::Embed,
        priority: Priority::Normal,
        reply_subject: REPLY.into(),
        deadline_ms,
        items: texts
            .iter()
            .map(|t| BatchItem {
                request_id: uuid::Uuid::new_v4(),
                input: TaskInput::Embed {
                    text: (*t).to_owned(),
                },
                idempotency: None,
                deferred: None,
            })
            .collect(),
    }
}

fn later() -> u64 {
    now_ms() + 60_000
}

fn embeddings(result: &ResultBatch) -> Vec<Vec<f32>> {
    result
        .items
        .iter()
        .map(|i| match &i.outcome {
            ItemOutcome::Ok(TaskOutput::Embedding { embedding }) => embedding.clone(),
            other => panic!("not an embedding: {other:?}"),
        })
        .collect()
}

async fn next_json(sub: &mut async_nats::Subscriber, what: &str) -> serde_json::Value {
    let msg = tokio::time::timeout(LIMIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}"))
        .expect("subscription open");
    serde_json::from_slice(&msg.payload).expect("JSON event")
}

#[tokio::test]
async fn a_batch_is_answered_in_order_then_acked() {
    let rig = Rig::new(FaultArgs::default(), 0).await;
    let mut results = rig.admin.subscribe(REPLY).await.unwrap();
    let sent = batch(&["a cat", "the long sentence here"], later());
    rig.publish(protocol::encode(&sent).unwrap()).await;
    rig.pull();

    let msg = tokio::time::timeout(LIMIT, results.next())
        .await
        .unwrap()
        .unwrap();
    let result: ResultBatch = protocol::decode(&msg.payload).unwrap();
    assert_eq!(result.batch_id, sent.batch_id);
    assert_eq!(
        (result.worker_id.as_str(), result.model.as_str()),
        ("w1", "toy")
    );
    let ids: Vec<_> = result.items.iter().map(|i| i.request_id).collect();
    assert_eq!(
        ids,
        sent.items.iter().map(|i| i.request_id).collect::<Vec<_>>()
    );
    assert_eq!(
        embeddings(&result),
        vec![
            toy_embedding("a cat"),
            toy_embedding("the long sentence here")
        ]
    );
    rig.stream_empty().await;
    let counts = rig.counters.snapshot();
    assert_eq!(
        (counts.processed, counts.failed, counts.in_flight),
        (2, 0, 0)
    );
    assert_eq!(rig.passes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_and_expired_messages_are_terminated_uncomputed() {
    let rig = Rig::new(FaultArgs::default(), 0).await;
    let mut failed = rig.admin.subscribe("infer.event.w1.failed").await.unwrap();
    let mut expired = rig.admin.subscribe("infer.event.w1.expired").await.unwrap();
    rig.publish(b"\x00 not msgpack".to_vec()).await;
    rig.publish(protocol::encode(&batch(&["too late"], now_ms() - 1)).unwrap())
        .await;
    rig.pull();

    let event = next_json(&mut failed, "a failed event for the malformed message").await;
    assert!(
        event["error"].as_str().unwrap().contains("malformed"),
        "{event}"
    );
    let event = next_json(&mut expired, "an expired event").await;
    assert_eq!(event["requests"], 1, "{event}");
    rig.stream_empty().await;
    assert_eq!(rig.passes.load(Ordering::SeqCst), 0, "nothing computed");
    let counts = rig.counters.snapshot();
    assert_eq!((counts.processed, counts.failed), (0, 1));

    // Neither vanished: each was copied to the dead letters first, saying why.
    let dead = jetstream::new(rig.admin.clone())
        .get_stream(subjects::DEAD_STREAM)
        .await
        .expect("INFER_DEAD");
    let header = |m: &jetstream::message::StreamMessage, name: &str| {
        m.headers.get(name).map(|v| v.as_str().to_owned())
    };
    let malformed = dead
        .get_raw_message(1)
        .await
        .expect("the first dead letter");
    assert_eq!(&malformed.payload[..], b"\x00 not msgpack");
    assert_eq!(
        header(&malformed, dead::HEADER_REASON).as_deref(),
        Some("malformed")
    );
    assert_eq!(
        header(&malformed, dead::HEADER_LAST_WORKER).as_deref(),
        Some("w1")
    );
    assert_eq!(
        header(&malformed, dead::HEADER_ATTEMPTS).as_deref(),
        Some("1")
    );
    assert!(header(&malformed, dead::HEADER_LAST_ERROR).is_some_and(|e| !e.is_empty()));
    let late = dead
        .get_raw_message(2)
        .await
        .expect("the second dead letter");
    assert_eq!(
        header(&late, dead::HEADER_REASON).as_deref(),
        Some("expired")
    );
    let batch: TaskBatch = protocol::decode(&late.payload).expect("the batch, byte for byte");
    assert_eq!(batch.items.len(), 1);
}

#[tokio::test]
async fn a_lost_result_is_not_acked_and_comes_back() {
    let lose_all = FaultArgs {
        drop_rate: 1.0,
        ..FaultArgs::default()
    };
    let rig = Rig::redelivering(lose_all).await;
    let mut failed = rig.admin.subscribe("infer.event.w1.failed").await.unwrap();
    let mut again = rig
        .admin
        .subscribe("infer.event.w1.redelivered")
        .await
        .unwrap();
    let sent = batch(&["lost"], later());
    rig.publish(protocol::encode(&sent).unwrap()).await;
    rig.pull();

    let event = next_json(&mut failed, "a failed event for the lost result").await;
    assert_eq!(event["error"], "injected lost result", "{event}");
    let event = next_json(&mut again, "the batch redelivered after its ack wait").await;
    assert_eq!(event["batch_id"], sent.batch_id.to_string(), "{event}");
    assert!(event["attempt"].as_u64().unwrap() >= 2, "{event}");
    let counts = rig.counters.snapshot();
    assert_eq!(counts.processed, 0, "a lost result answers nobody");
    assert!(counts.redelivered >= 1);
}

#[tokio::test]
async fn queued_batches_share_one_forward_pass() {
    let rig = Rig::new(FaultArgs::default(), 2048).await;
    let mut results = rig.admin.subscribe(REPLY).await.unwrap();
    let texts = ["one", "two words", "three little words"];
    let mut sent = Vec::new();
    for text in texts {
        let b = batch(&[text], later());
        rig.publish(protocol::encode(&b).unwrap()).await;
        sent.push(b);
    }
    rig.pull();

    for _ in &sent {
        let msg = tokio::time::timeout(LIMIT, results.next())
            .await
            .unwrap()
            .unwrap();
        let result: ResultBatch = protocol::decode(&msg.payload).unwrap();
        let i = sent
            .iter()
            .position(|b| b.batch_id == result.batch_id)
            .expect("a batch that was sent");
        assert_eq!(embeddings(&result), vec![toy_embedding(texts[i])]);
    }
    rig.stream_empty().await;
    assert_eq!(
        rig.passes.load(Ordering::SeqCst),
        1,
        "three batches, one pass"
    );
}

async fn next_result(sub: &mut async_nats::Subscriber) -> ResultBatch {
    let msg = tokio::time::timeout(LIMIT, sub.next())
        .await
        .expect("a result")
        .expect("subscription open");
    protocol::decode(&msg.payload).expect("a result batch")
}

/// The `started` event says how long the batch waited in the queue, so
/// queueing can be told apart from compute (and measured across workers).
#[tokio::test]
async fn the_started_event_says_how_long_the_batch_waited_in_the_queue() {
    let rig = Rig::new(FaultArgs::default(), 0).await;
    let mut started = rig.admin.subscribe("infer.event.w1.started").await.unwrap();
    rig.publish(protocol::encode(&batch(&["a cat"], later())).unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    rig.pull();
    let event = next_json(&mut started, "the batch started").await;
    let queued = event["latency_ms"].as_f64().expect("latency_ms");
    // 1 ms of slack: this clock is read in whole milliseconds.
    assert!(queued >= 399.0, "it waited 400 ms: {event}");
}

/// Each result is also sent straight to its gateway, the same message on
/// `infer.direct.<gateway-id>`, so the gateway can answer before it is stored.
#[tokio::test]
async fn each_result_also_goes_straight_to_its_gateway() {
    let rig = Rig::new(FaultArgs::default(), 0).await;
    let mut stored = rig.admin.subscribe(REPLY).await.unwrap();
    let mut direct = (rig.admin)
        .subscribe(subjects::direct_of(REPLY).expect("a result subject"))
        .await
        .unwrap();
    let sent = batch(&["a cat"], later());
    rig.publish(protocol::encode(&sent).unwrap()).await;
    rig.pull();
    let first = next_result(&mut direct).await;
    let copy = next_result(&mut stored).await;
    assert_eq!(
        (first.batch_id, copy.batch_id),
        (sent.batch_id, sent.batch_id)
    );
    assert_eq!(embeddings(&first), vec![toy_embedding("a cat")]);
    assert_eq!(embeddings(&first), embeddings(&copy), "the same result");
    rig.stream_empty().await;
}

#[tokio::test]
async fn a_busy_worker_leaves_other_queues_to_idle_workers() {
    let slow = FaultArgs {
        delay_min_ms: 1500,
        delay_max_ms: 1500,
        ..FaultArgs::default()
    };
    let rig = Rig::new(slow, 0).await;
    let mut results = rig.admin.subscribe(REPLY).await.unwrap();
    let mut started = rig.admin.subscribe("infer.event.w1.started").await.unwrap();
    let heavy = batch(&["the long one"], later());
    rig.pull();
    rig.publish(protocol::encode(&heavy).unwrap()).await;
    next_json(&mut started, "the first batch started").await;

    // While it computes, a batch on the worker's other consumer must stay in
    // the queue for someone else: the busy worker has no pull waiting there.
    let high = rig
        .high_batch_stays_queued(Duration::from_millis(300))
        .await;
    assert_eq!(next_result(&mut results).await.batch_id, heavy.batch_id);
    assert_eq!(next_result(&mut results).await.batch_id, high.batch_id);
    rig.stream_empty().await;
}

#[tokio::test]
async fn a_worker_taking_queued_batches_along_holds_no_other_request() {
    // The worker hears the server 300 ms late: taking the queued batch along
    // is a round trip of 300 ms or more, then the pass takes 1.5 s.
    let slow = FaultArgs {
        delay_min_ms: 1500,
        delay_max_ms: 1500,
        ..FaultArgs::default()
    };
    let rig = Rig::build(slow, 2048, Some(Duration::from_millis(300)), "3000").await;
    let mut results = rig.admin.subscribe(REPLY).await.unwrap();
    let first = batch(&["first"], later());
    let behind = batch(&["queued behind it"], later());
    rig.publish(protocol::encode(&first).unwrap()).await;
    rig.publish(protocol::encode(&behind).unwrap()).await;
    rig.pull();
    wait_for("the queued batch taken along", LIMIT, || async {
        (rig.consumer_state(Priority::Normal).await.1 == 2).then_some(())
    })
    .await;

    // The worker is busy from its first batch on: a batch on its other
    // queue must stay there for someone else.
    let high = rig
        .high_batch_stays_queued(Duration::from_millis(600))
        .await;
    let mut answered = vec![
        next_result(&mut results).await.batch_id,
        next_result(&mut results).await.batch_id,
        next_result(&mut results).await.batch_id,
    ];
    answered.sort();
    let mut sent = vec![first.batch_id, behind.batch_id, high.batch_id];
    sent.sort();
    assert_eq!(answered, sent);
    rig.stream_empty().await;
}

#[tokio::test]
async fn quick_batches_leave_the_other_pull_requests_open() {
    let rig = Rig::new(FaultArgs::default(), 0).await;
    let mut results = rig.admin.subscribe(REPLY).await.unwrap();
    let high_next = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
        subjects::TASK_STREAM,
        rig.consumers[0].0
    );
    let mut high_pulls = rig.admin.subscribe(high_next).await.unwrap();
    rig.admin.flush().await.unwrap();
    rig.pull();
    // One batch at a time on the normal queue, each handled in well under a
    // millisecond: the request waiting on the high queue serves them all.
    const BATCHES: usize = 40;
    for i in 0..BATCHES {
        let sent = batch(&[&format!("quick {i}")], later());
        rig.publish(protocol::encode(&sent).unwrap()).await;
        let result = next_result(&mut results).await;
        assert_eq!((result.batch_id, result.attempt), (sent.batch_id, 1));
    }
    rig.stream_empty().await;
    let mut asked = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(100), high_pulls.next()).await
    {
        asked += 1;
    }
    // Withdrawn and renewed per batch, it would be asked for 40 times. A
    // batch that took over 2 ms (a CPU-starved suite) costs a renewal or two,
    // and the request is renewed each second of the run.
    assert!(
        asked < BATCHES / 2,
        "{asked} pull requests on the high queue over {BATCHES} quick normal batches"
    );
}

#[tokio::test]
async fn batches_delivered_while_pulls_are_withdrawn_are_computed_at_once() {
    let rig = Rig::new(FaultArgs::default(), 0).await;
    let mut results = rig.admin.subscribe(REPLY).await.unwrap();
    // Both queues hold a batch, so both waiting pull requests are answered
    // at once: one batch wins, the other arrives during the withdrawal.
    let normal = batch(&["normal"], later());
    let mut high = batch(&["high"], later());
    high.priority = Priority::High;
    rig.publish(protocol::encode(&normal).unwrap()).await;
    rig.publish_to(Priority::High, protocol::encode(&high).unwrap())
        .await;
    rig.pull();

    rig.both_answered_first_time(&mut results, &high, &normal)
        .await;
}

#[tokio::test]
async fn the_next_batch_is_pulled_while_the_last_result_is_stored() {
    // The worker hears the server 300 ms late, so storing a result (publish,
    // then its JetStream ack) takes at least 600 ms and the task's ack leaves
    // only after it; a pass takes 1 s, long enough for the withdrawal of the
    // other pull request to be confirmed meanwhile. A worker that pulls only
    // once a pass is delivered never has two batches unacked; one that pulls
    // as soon as a pass is computed has the second delivered while the first
    // is still being stored.
    let slow_pass = FaultArgs {
        delay_min_ms: 1000,
        delay_max_ms: 1000,
        ..FaultArgs::default()
    };
    let rig = Rig::over_slow_link(Duration::from_millis(300), slow_pass).await;
    let mut results = rig.admin.subscribe(REPLY).await.unwrap();
    let first = batch(&["first"], later());
    let second = batch(&["second"], later());
    rig.publish(protocol::encode(&first).unwrap()).await;
    rig.publish(protocol::encode(&second).unwrap()).await;
    rig.pull();
    wait_for(
        "both batches delivered and unacked at once",
        LIMIT,
        || async { (rig.consumer_state(Priority::Normal).await == (0, 2)).then_some(()) },
    )
    .await;

    for sent in [&first, &second] {
        let result = next_result(&mut results).await;
        assert_eq!((result.batch_id, result.attempt), (sent.batch_id, 1));
    }
    rig.stream_empty().await;
    assert_eq!(rig.counters.snapshot().processed, 2);
}

#[tokio::test]
async fn a_batch_on_the_wire_while_pulls_are_withdrawn_is_kept() {
    // The worker hears the server 300 ms late: the high batch leaves the
    // server after the normal one but before the worker's withdrawal reaches
    // it, so it is still on the wire when the worker withdraws its requests.
    let rig = Rig::over_slow_link(Duration::from_millis(300), FaultArgs::default()).await;
    let mut results = rig.admin.subscribe(REPLY).await.unwrap();
    let normal = batch(&["normal"], later());
    let mut high = batch(&["high"], later());
    high.priority = Priority::High;
    rig.publish(protocol::encode(&normal).unwrap()).await;
    rig.pull();
    wait_for("the normal batch delivered", LIMIT, || async {
        (rig.consumer_state(Priority::Normal).await.1 == 1).then_some(())
    })
    .await;
    // Well inside the delay, and far enough apart that the worker does not
    // read both batches at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rig.publish_to(Priority::High, protocol::encode(&high).unwrap())
        .await;

    rig.both_answered_first_time(&mut results, &high, &normal)
        .await;
}

#[tokio::test]
async fn a_worker_without_the_compute_lease_leaves_batches_in_the_queue() {
    let rig = Rig::new(FaultArgs::default(), 0).await;
    let mut results = rig.admin.subscribe(REPLY).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lease = ComputeLease::open(&dir.path().join("compute.lease"), LIMIT).unwrap();
    // Another worker of this machine holds the lease.
    let other = lease.take().await;
    assert!(matches!(other, Turn::Held(_)));
    rig.pull_taking_turns(Some(lease));
    let queued = batch(&["waits its turn"], later());
    rig.publish(protocol::encode(&queued).unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.consumer_state(Priority::Normal).await,
        (1, 0),
        "(waiting, delivered) while the lease is held elsewhere: not pulled"
    );
    drop(other);
    let result = next_result(&mut results).await;
    assert_eq!((result.batch_id, result.attempt), (queued.batch_id, 1));
    rig.stream_empty().await;
}

#[tokio::test]
async fn an_idle_worker_hands_the_compute_lease_on() {
    let rig = Rig::new(FaultArgs::default(), 0).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compute.lease");
    rig.pull_taking_turns(Some(ComputeLease::open(&path, LIMIT).unwrap()));
    wait_for(
        "the worker's pull request (it holds the lease)",
        LIMIT,
        || async { (rig.waiting_pulls(Priority::Normal).await > 0).then_some(()) },
    )
    .await;
    // Another worker of the machine gets its turn while nothing comes, long
    // before its patience would run out.
    let other = ComputeLease::open(&path, Duration::from_secs(3600)).unwrap();
    let turn = tokio::time::timeout(LIMIT, other.take())
        .await
        .expect("a turn");
    assert!(matches!(turn, Turn::Held(_)), "handed on, not given up on");
}
