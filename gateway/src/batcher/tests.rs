//! The flush rules on a paused clock: every batch is checked for its exact
//! requests and the exact virtual time it left at.

use super::*;
use jetinfer_shared::protocol::TaskInput;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::sleep;
use uuid::Uuid;

const MAX_WAIT: Duration = Duration::from_millis(50);
/// The linger of the tests that use it, on the real clock (a linger spins,
/// so a paused clock would never reach its end); the others linger not at all.
/// Long next to the few milliseconds between its clients' requests, so that
/// a stalled CPU does not split their batch; under the tests' max wait there.
const LINGER: Duration = Duration::from_millis(300);

/// A batch as the tests compare it: when it left, its queue, its request numbers.
type Seen = (Duration, Priority, Task, Vec<u128>);

/// Stands in for the waiter map: the test says how many requests are unanswered.
#[derive(Clone, Default)]
struct Waiting(Arc<AtomicUsize>);

impl Unanswered for Waiting {
    fn unanswered(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl BatchSink for mpsc::UnboundedSender<Batch> {
    fn accept(&self, batch: Batch) {
        self.send(batch).expect("the test still listens");
    }
}

struct Harness {
    batcher: Option<Batcher>,
    waiting: Waiting,
    flushed: mpsc::UnboundedReceiver<Batch>,
    start: Instant,
}

impl Harness {
    fn new(batch_max_size: u32) -> Self {
        Self::with_max_bytes(batch_max_size, usize::MAX)
    }

    /// A batcher whose batches hold at most `max_bytes` of encoded requests.
    fn with_max_bytes(batch_max_size: u32, max_bytes: usize) -> Self {
        Self::spawn(batch_max_size, max_bytes, MAX_WAIT, Duration::ZERO)
    }

    /// A batcher whose queues linger `linger` while workers are idle (and
    /// wait for company ten times as long while they are busy).
    fn lingering(linger: Duration) -> Self {
        Self::spawn(32, usize::MAX, linger * 10, linger)
    }

    fn spawn(batch_max_size: u32, max_bytes: usize, max_wait: Duration, linger: Duration) -> Self {
        let args = BatchArgs {
            batch_max_size,
            batch_max_wait_ms: max_wait.as_millis() as u64,
            batch_linger_us: linger.as_micros() as u64,
            max_request_tokens: 400,
        };
        let waiting = Waiting::default();
        let (sink, flushed) = mpsc::unbounded_channel();
        Self {
            batcher: Some(Batcher::spawn(args, max_bytes, waiting.clone(), sink)),
            waiting,
            flushed,
            start: Instant::now(),
        }
    }

    /// One published request is still unanswered: workers are busy.
    fn busy(&self) {
        self.waiting.0.fetch_add(1, Ordering::SeqCst);
    }

    /// `n` published requests got their answers.
    fn answered(&self, n: usize) {
        self.waiting.0.fetch_sub(n, Ordering::SeqCst);
    }

    /// Submit request `n` as the handler does: counted as waiting, then queued.
    async fn submit(&self, n: u128, priority: Priority, task: Task) {
        self.try_submit(n, priority, task, "x")
            .await
            .expect("the batcher takes it");
    }

    /// Submit request `n` with `text` as its input, and say what the batcher said.
    async fn try_submit(
        &self,
        n: u128,
        priority: Priority,
        task: Task,
        text: &str,
    ) -> Result<(), SubmitError> {
        self.try_submit_on(n, ModelName::default_for(task), priority, task, text)
            .await
    }

    /// Submit request `n` for `model`, and say what the batcher said.
    async fn try_submit_on(
        &self,
        n: u128,
        model: ModelName,
        priority: Priority,
        task: Task,
        text: &str,
    ) -> Result<(), SubmitError> {
        self.waiting.0.fetch_add(1, Ordering::SeqCst);
        let text = String::from(text);
        let input = match task {
            Task::Embed => TaskInput::Embed { text },
            Task::Similarity => TaskInput::Similarity {
                query: text.clone(),
                candidates: vec![text],
            },
            Task::Classify => TaskInput::Classify {
                text,
                labels: vec!["a".into(), "b".into()],
            },
            Task::Echo => TaskInput::Echo { text },
            Task::ClassifyImage => TaskInput::ClassifyImage {
                image: jetinfer_shared::image::ImageCrop {
                    side: 224,
                    rgb: text.into_bytes(),
                },
            },
        };
        let queued = Queued {
            item: BatchItem {
                request_id: Uuid::from_u128(n),
                input,
                idempotency: None,
                deferred: None,
            },
            model,
            priority,
            deadline_ms: 0,
            claim_revision: None,
            stored: None,
        };
        let batcher = self.batcher.as_ref().expect("not shut down");
        batcher.submit(queued).await
    }

    /// The next batch, waiting (in virtual time) as long as it takes.
    async fn next(&mut self) -> Seen {
        let batch = self.flushed.recv().await.expect("a batch");
        let ids = batch.items.iter().map(|q| q.item.request_id.as_u128());
        (
            self.start.elapsed(),
            batch.priority,
            batch.task,
            ids.collect(),
        )
    }

    /// Let the batcher act on everything up to `after`, then check it sent nothing.
    async fn nothing_within(&mut self, after: Duration) {
        sleep(after).await;
        assert!(self.flushed.try_recv().is_err(), "flushed too early");
    }
}

const N: Priority = Priority::Normal;
const EMBED: Task = Task::Embed;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_goes_at_once() {
    let mut h = Harness::new(3);
    h.busy();
    h.submit(1, N, EMBED).await;
    h.submit(2, N, EMBED).await;
    h.nothing_within(ms(10)).await;
    h.submit(3, N, EMBED).await;
    assert_eq!(h.next().await, (ms(10), N, EMBED, vec![1, 2, 3]));
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_cut_into_batches_of_the_maximum_size() {
    let mut h = Harness::new(3);
    h.busy();
    for n in 1..=7 {
        h.submit(n, N, EMBED).await;
    }
    assert_eq!(h.next().await, (ms(0), N, EMBED, vec![1, 2, 3]));
    assert_eq!(h.next().await, (ms(0), N, EMBED, vec![4, 5, 6]));
    // The queue is flushed whole once full, so the rest leaves with it.
    assert_eq!(h.next().await, (ms(0), N, EMBED, vec![7]));
}

#[tokio::test(start_paused = true)]
async fn a_partial_queue_waits_max_wait_from_its_oldest_request() {
    let mut h = Harness::new(32);
    h.busy();
    h.submit(1, N, EMBED).await;
    h.nothing_within(ms(20)).await;
    h.submit(2, N, EMBED).await;
    assert_eq!(h.next().await, (MAX_WAIT, N, EMBED, vec![1, 2]));
}

#[tokio::test(start_paused = true)]
async fn idle_workers_get_a_lone_request_at_once_without_a_linger() {
    let mut h = Harness::new(32);
    h.submit(1, N, EMBED).await;
    assert_eq!(h.next().await, (ms(0), N, EMBED, vec![1]));
    // Request 1 is now published and unanswered, so request 2 waits for company.
    h.nothing_within(ms(10)).await;
    h.submit(2, N, EMBED).await;
    assert_eq!(h.next().await, (ms(10) + MAX_WAIT, N, EMBED, vec![2]));
}

#[tokio::test]
async fn idle_workers_get_a_lone_request_once_it_lingered() {
    let mut h = Harness::lingering(LINGER);
    h.submit(1, N, EMBED).await;
    let (left, _, _, ids) = h.next().await;
    assert_eq!(ids, [1]);
    assert!(left >= LINGER, "left after {left:?}, before its linger");
}

#[tokio::test]
async fn clients_answered_together_at_idle_workers_leave_together() {
    let mut h = Harness::lingering(LINGER);
    h.busy();
    h.submit(1, N, EMBED).await;
    // The busy batch is answered and its clients come back one by one: the
    // first comer finds the workers idle, but the others are on their way.
    // (Sent at the first comer, 1 and 2 went alone and 3 and 4 waited
    // behind them.)
    h.answered(1);
    h.submit(2, N, EMBED).await;
    sleep(LINGER / 60).await;
    h.submit(3, N, EMBED).await;
    sleep(LINGER / 60).await;
    h.submit(4, N, EMBED).await;
    let (_, _, _, ids) = h.next().await;
    assert_eq!(ids, [1, 2, 3, 4], "one batch");
}

#[tokio::test(start_paused = true)]
async fn each_task_and_priority_has_its_own_queue() {
    let mut h = Harness::new(32);
    h.busy();
    h.submit(1, N, EMBED).await;
    h.submit(2, Priority::High, EMBED).await;
    h.submit(3, N, Task::Classify).await;
    h.submit(4, N, EMBED).await;
    // Due together, flushed in key order: high before normal, then by task.
    assert_eq!(h.next().await, (MAX_WAIT, Priority::High, EMBED, vec![2]));
    assert_eq!(h.next().await, (MAX_WAIT, N, EMBED, vec![1, 4]));
    assert_eq!(h.next().await, (MAX_WAIT, N, Task::Classify, vec![3]));
}

#[tokio::test(start_paused = true)]
async fn each_model_of_a_task_has_its_own_queue() {
    let mut h = Harness::new(32);
    h.busy();
    let canary: ModelName = "canary".parse().unwrap();
    for (n, model) in [(1, None), (2, Some(&canary)), (3, None), (4, Some(&canary))] {
        let model = model.cloned().unwrap_or(ModelName::default_for(EMBED));
        h.try_submit_on(n, model, N, EMBED, "x").await.unwrap();
    }
    let mut models = Vec::new();
    for _ in 0..2 {
        let batch = h.flushed.recv().await.expect("a batch");
        let ids: Vec<u128> = batch
            .items
            .iter()
            .map(|q| q.item.request_id.as_u128())
            .collect();
        assert!(batch.items.iter().all(|q| q.model == batch.model));
        models.push((batch.model.to_string(), ids));
    }
    assert_eq!(
        models,
        [
            ("all-minilm-l6-v2".to_owned(), vec![1, 3]),
            ("canary".to_owned(), vec![2, 4])
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_flushes_what_is_buffered() {
    let mut h = Harness::new(32);
    h.busy();
    h.submit(1, N, EMBED).await;
    h.submit(2, N, Task::Echo).await;
    h.submit(3, N, EMBED).await;
    h.nothing_within(ms(10)).await;
    h.batcher = None;
    assert_eq!(h.next().await, (ms(10), N, EMBED, vec![1, 3]));
    assert_eq!(h.next().await, (ms(10), N, Task::Echo, vec![2]));
    assert!(h.flushed.recv().await.is_none(), "the batcher has ended");
}

/// Encoded size of request `n` embedding "x", as the batcher measures it.
fn embed_x_bytes() -> usize {
    let item = BatchItem {
        request_id: Uuid::from_u128(1),
        input: TaskInput::Embed { text: "x".into() },
        idempotency: None,
        deferred: None,
    };
    protocol::encode(&item).expect("encodes").len()
}

#[tokio::test(start_paused = true)]
async fn a_queue_is_cut_before_its_bytes_pass_the_limit() {
    // Room for two requests per batch, though ten would be allowed by count.
    let mut h = Harness::with_max_bytes(10, embed_x_bytes() * 5 / 2);
    h.busy();
    for n in 1..=5 {
        h.submit(n, N, EMBED).await;
    }
    assert_eq!(h.next().await, (Duration::ZERO, N, EMBED, vec![1, 2]));
    assert_eq!(h.next().await, (Duration::ZERO, N, EMBED, vec![3, 4]));
    assert_eq!(
        h.next().await,
        (MAX_WAIT, N, EMBED, vec![5]),
        "the rest waits"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_no_batch_could_carry_is_refused_at_once() {
    let h = Harness::with_max_bytes(10, 64);
    let refused = h.try_submit(1, N, EMBED, &"x".repeat(100)).await;
    assert!(
        matches!(refused, Err(SubmitError::TooLarge { size, limit: 64 }) if size > 100),
        "{refused:?}"
    );
    h.try_submit(2, N, EMBED, "x")
        .await
        .expect("a small one still fits");
}

#[tokio::test(start_paused = true)]
async fn a_request_over_the_token_budget_is_refused_at_once() {
    let h = Harness::new(10);
    // A query and a candidate of 256 tokens each, against a budget of 400.
    let refused = h
        .try_submit(1, N, Task::Similarity, &"word ".repeat(1000))
        .await;
    assert!(
        matches!(
            refused,
            Err(SubmitError::TooCostly {
                tokens: 512,
                limit: 400
            })
        ),
        "{refused:?}"
    );
    h.try_submit(2, N, Task::Similarity, "short")
        .await
        .expect("a cheap one is taken");
}

#[tokio::test(start_paused = true)]
async fn a_heavy_request_travels_alone_so_small_ones_do_not_wait_out_its_pass() {
    let mut h = Harness::new(10);
    h.busy();
    // "x" as query and candidate costs 4 estimated tokens; 790 bytes as both
    // cost 2 × 199 = 398: under the budget of 400 alone, past it together.
    h.submit(1, N, Task::Similarity).await;
    h.try_submit(2, N, Task::Similarity, &"word ".repeat(158))
        .await
        .expect("under the budget alone");
    h.submit(3, N, Task::Similarity).await;
    assert_eq!(
        h.next().await,
        (Duration::ZERO, N, Task::Similarity, vec![1])
    );
    assert_eq!(
        h.next().await,
        (Duration::ZERO, N, Task::Similarity, vec![2]),
        "the heavy one goes on its own"
    );
    assert_eq!(
        h.next().await,
        (MAX_WAIT, N, Task::Similarity, vec![3]),
        "the next small one starts a new batch"
    );
}
