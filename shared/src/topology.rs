//! Idempotent creation of the JetStream objects jetinfer needs.
//!
//! Every service calls [`ensure_streams`] at start, so the stack comes up in
//! any order and a fresh nats-server needs no manual setup. Creation keeps an
//! existing object as it is: operators may tune limits with the nats CLI.

use crate::protocol::{ModelName, Priority, Task};
use crate::subjects;
use async_nats::jetstream::{self, consumer, kv, stream};
use clap::Args;
use std::time::Duration;

/// A list of milliseconds, written `1000,2000` (or `none` for no list).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule(pub Vec<u64>);

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(Schedule::default());
    }
    s.split(',')
        .map(|ms| ms.trim().parse::<u64>().map_err(|e| format!("{ms:?}: {e}")))
        .collect::<Result<_, _>>()
        .map(Schedule)
}

/// Limits of the task stream and the retry policy of work consumers.
#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// How long a worker may hold a batch without acking (or sending progress)
    /// before JetStream redelivers it to another worker.
    #[arg(long, env = "ACK_WAIT_MS", default_value_t = 5_000)]
    pub ack_wait_ms: u64,
    /// Ack waits of later deliveries in ms, comma separated: the 2nd delivery of
    /// a batch may take the first value, the 3rd the second, and so on (the last
    /// repeats). `none`: every delivery waits `ACK_WAIT_MS`.
    #[arg(long, env = "BACKOFF_MS", default_value = "10000,20000", value_parser = parse_schedule)]
    pub backoff_ms: Schedule,
    /// Deliveries of a batch before JetStream gives up on it.
    #[arg(long, env = "MAX_DELIVER", default_value_t = 4)]
    pub max_deliver: i64,
    /// Unacked batches a work consumer hands out at once, across all workers.
    #[arg(long, env = "MAX_ACK_PENDING", default_value_t = 256)]
    pub max_ack_pending: i64,
    /// Batches the task stream holds before new publishes are refused (backpressure).
    #[arg(long, env = "STREAM_MAX_MSGS", default_value_t = 100_000)]
    pub stream_max_msgs: i64,
    /// Bytes the task stream holds before new publishes are refused.
    #[arg(long, env = "STREAM_MAX_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub stream_max_bytes: i64,
    /// How long results stay in the result stream.
    #[arg(long, env = "RESULT_MAX_AGE_MS", default_value_t = 60_000)]
    pub result_max_age_ms: u64,
    /// Worker heartbeat period; a heartbeat expires after three of them.
    #[arg(long, env = "HEARTBEAT_INTERVAL_MS", default_value_t = 1_000)]
    pub heartbeat_interval_ms: u64,
    /// Copies JetStream keeps of the task and result streams and of every
    /// bucket, on different servers (consumers inherit it): 1 on a single
    /// server, 3 on a cluster, so losing a node loses nothing accepted. It
    /// applies when a stream or bucket is created; one that exists keeps its
    /// own (a mismatch is logged).
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// How long dead letters (batches given up on, or terminated as
    /// malformed or expired) stay in `INFER_DEAD`: a number with `s`, `m`,
    /// `h` or `d`.
    #[arg(long, env = "DEAD_MAX_AGE", default_value = "7d", value_parser = parse_age)]
    pub dead_max_age: Duration,
}

/// `90s`, `30m`, `12h`, `7d` (a bare number is seconds) as a duration.
fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: a number with s, m, h or d, e.g. 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("{s:?}: unknown unit {other:?}; use s, m, h or d")),
    };
    match n * seconds {
        0 => Err(format!("{s:?}: must be more than zero")),
        total => Ok(Duration::from_secs(total)),
    }
}

impl TopologyArgs {
    /// JetStream's BackOff list: `ACK_WAIT_MS`, then `BACKOFF_MS`, cut to fewer
    /// entries than `MAX_DELIVER` as JetStream requires. Empty without a schedule.
    pub fn backoff(&self) -> Vec<Duration> {
        let keep = match self.max_deliver {
            _ if self.backoff_ms.0.is_empty() => return Vec::new(),
            n if n < 0 => usize::MAX, // unlimited deliveries
            n if n <= 1 => return Vec::new(),
            n => (n - 1) as usize,
        };
        std::iter::once(self.ack_wait_ms)
            .chain(self.backoff_ms.0.iter().copied())
            .take(keep)
            .map(Duration::from_millis)
            .collect()
    }

    /// The shortest time a delivery may go without an ack: how often a busy
    /// worker must send AckProgress.
    pub fn min_ack_wait(&self) -> Duration {
        let min = self
            .backoff_ms
            .0
            .iter()
            .copied()
            .fold(self.ack_wait_ms, u64::min);
        Duration::from_millis(min)
    }

    /// The longest time a delivery may go without an ack.
    pub fn max_ack_wait(&self) -> Duration {
        let max = self.backoff().into_iter().max().unwrap_or_default();
        max.max(Duration::from_millis(self.ack_wait_ms))
    }

    /// Time a heartbeat stays in the bucket without being renewed.
    pub fn heartbeat_ttl(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms * 3)
    }

    /// `STREAM_REPLICAS` as JetStream counts it.
    pub fn replicas(&self) -> usize {
        usize::from(self.stream_replicas)
    }
}

/// A JetStream object could not be created or looked up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up {what}: {source}")]
pub struct TopologyError {
    what: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn failed<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
) -> impl FnOnce(E) -> TopologyError + '_ {
    move |e| TopologyError {
        what: what.to_owned(),
        source: Box::new(e),
    }
}

/// Create the task and result streams if they are missing; return the task stream.
pub async fn ensure_streams(
    js: &jetstream::Context,
    args: &TopologyArgs,
) -> Result<stream::Stream, TopologyError> {
    let results = js
        .get_or_create_stream(stream::Config {
            name: subjects::RESULT_STREAM.to_owned(),
            subjects: vec![subjects::RESULT_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: Duration::from_millis(args.result_max_age_ms),
            num_replicas: args.replicas(),
            ..Default::default()
        })
        .await
        .map_err(failed(subjects::RESULT_STREAM))?;
    warn_on_other_replicas(&results, args);
    let dead = js
        .get_or_create_stream(stream::Config {
            name: subjects::DEAD_STREAM.to_owned(),
            subjects: vec![subjects::DEAD_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: args.dead_max_age,
            duplicate_window: DEAD_DUPLICATE_WINDOW,
            num_replicas: args.replicas(),
            ..Default::default()
        })
        .await
        .map_err(failed(subjects::DEAD_STREAM))?;
    warn_on_other_replicas(&dead, args);
    let tasks = js
        .get_or_create_stream(stream::Config {
            name: subjects::TASK_STREAM.to_owned(),
            subjects: vec![subjects::TASK_SUBJECTS.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            max_messages: args.stream_max_msgs,
            max_bytes: args.stream_max_bytes,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            num_replicas: args.replicas(),
            ..Default::default()
        })
        .await
        .map_err(failed(subjects::TASK_STREAM))?;
    warn_on_other_replicas(&tasks, args);
    Ok(tasks)
}

/// How long `INFER_DEAD` remembers a dead letter's id: every gateway copies
/// a given-up batch when it hears the advisory, within a second or so of the
/// others, and JetStream keeps the first copy.
const DEAD_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// An existing stream keeps its replica count: say so when it is not the
/// one asked for (a stack moved onto a cluster with its old store).
fn warn_on_other_replicas(stream: &stream::Stream, args: &TopologyArgs) {
    let config = &stream.cached_info().config;
    if config.num_replicas != args.replicas() {
        tracing::warn!(
            stream = %config.name,
            replicas = config.num_replicas,
            wanted = args.replicas(),
            "the stream exists with another replica count; `nats stream edit <stream> --replicas N` changes it"
        );
    }
}

/// Create (or join) the shared durable pull consumer for one queue: a
/// model's task at a priority.
pub async fn ensure_work_consumer(
    tasks: &stream::Stream,
    args: &TopologyArgs,
    model: &ModelName,
    task: Task,
    priority: Priority,
) -> Result<consumer::Consumer<consumer::pull::Config>, TopologyError> {
    let name = subjects::work_consumer(model, task, priority);
    tasks
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subjects::task_subject(model, task, priority),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(args.ack_wait_ms),
                backoff: args.backoff(),
                max_deliver: args.max_deliver,
                max_ack_pending: args.max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .map_err(failed(&name))
}

/// Every work consumer of the task stream (one per model, task and
/// priority that a worker ever served), with its state, by name: one
/// `CONSUMER.LIST` request per 256 consumers, whatever models exist.
pub async fn work_consumers(tasks: &stream::Stream) -> Result<Vec<consumer::Info>, TopologyError> {
    use futures::TryStreamExt;
    let mut infos: Vec<consumer::Info> = tasks
        .consumers()
        .try_filter(|info| {
            std::future::ready(info.name.starts_with(subjects::WORK_CONSUMER_PREFIX))
        })
        .try_collect()
        .await
        .map_err(failed("the work consumer list"))?;
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(infos)
}

/// Create (or open) the heartbeat bucket; a key expires three intervals after its last put.
pub async fn ensure_workers_bucket(
    js: &jetstream::Context,
    args: &TopologyArgs,
) -> Result<kv::Store, TopologyError> {
    ensure_bucket(
        js,
        subjects::WORKERS_BUCKET,
        args.heartbeat_ttl(),
        args.replicas(),
    )
    .await
}

/// Create (or open) the `Idempotency-Key` bucket; a key (its claim, then its
/// answer) expires `ttl` after its last write. Only the gateway calls this:
/// workers open the bucket, their role may not create it.
pub async fn ensure_idempotency_bucket(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, TopologyError> {
    ensure_bucket(js, subjects::IDEMPOTENCY_BUCKET, ttl, replicas).await
}

/// Create (or open) the async results bucket; an entry (queued, running,
/// then the answer) expires `ttl` after its last write. Only the gateway
/// calls this: workers open the bucket, their role may not create it.
pub async fn ensure_results_bucket(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, TopologyError> {
    ensure_bucket(js, subjects::RESULTS_BUCKET, ttl, replicas).await
}

/// Open `bucket`, or create it with history 1, `max_age` and `replicas`
/// copies; an existing bucket is kept as it is.
async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, TopologyError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.to_owned(),
        history: 1,
        max_age,
        // File-backed like everything else: a nats-server restart must not
        // lose live workers' heartbeats or the answers retries are owed.
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(failed(bucket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        topology: TopologyArgs,
    }

    fn args(flags: &[&str]) -> TopologyArgs {
        Cli::parse_from(std::iter::once("t").chain(flags.iter().copied())).topology
    }

    #[test]
    fn dead_max_age_takes_a_unit_and_refuses_nonsense() {
        assert_eq!(args(&[]).dead_max_age, Duration::from_secs(7 * 86_400));
        for (text, seconds) in [("90s", 90), ("30m", 1800), ("12h", 43_200), ("45", 45)] {
            let age = args(&["--dead-max-age", text]).dead_max_age;
            assert_eq!(age, Duration::from_secs(seconds), "{text}");
        }
        for bad in ["0d", "7w", "d", ""] {
            let parsed = Cli::try_parse_from(["t", "--dead-max-age", bad]);
            assert!(parsed.is_err(), "{bad:?} must be refused");
        }
    }

    /// Every stream and bucket `STREAM_REPLICAS` covers, as JetStream names them.
    fn replicated() -> [String; 5] {
        [
            subjects::TASK_STREAM.to_owned(),
            subjects::RESULT_STREAM.to_owned(),
            subjects::DEAD_STREAM.to_owned(),
            format!("KV_{}", subjects::WORKERS_BUCKET),
            format!("KV_{}", subjects::RESULTS_BUCKET),
        ]
    }

    /// The streams and buckets a stack sets up, with `flags`.
    async fn set_up(js: &jetstream::Context, flags: &[&str]) -> Result<(), TopologyError> {
        let a = args(flags);
        ensure_streams(js, &a).await?;
        ensure_workers_bucket(js, &a).await?;
        ensure_results_bucket(js, Duration::from_secs(60), a.replicas()).await?;
        Ok(())
    }

    #[tokio::test]
    async fn stream_replicas_puts_every_stream_and_bucket_on_three_servers() {
        let nodes = jetinfer_testsupport::NatsServer::start_cluster(3, &[]).await;
        let js = jetstream::new(nodes[1].client().await);
        set_up(&js, &["--stream-replicas", "3"]).await.unwrap();
        for name in replicated() {
            let info = js
                .get_stream(&name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .clone();
            assert_eq!(info.config.num_replicas, 3, "{name}");
            jetinfer_testsupport::three_current_copies(&js, &name).await;
        }
    }

    #[tokio::test]
    async fn more_replicas_than_servers_is_a_clear_error() {
        let nats = jetinfer_testsupport::NatsServer::start();
        let js = jetstream::new(nats.client().await);
        let e = set_up(&js, &["--stream-replicas", "3"]).await.unwrap_err();
        let e = format!("{e}: {:?}", std::error::Error::source(&e));
        assert!(e.contains("replicas"), "{e}");
        set_up(&js, &[]).await.expect("one replica on one server");
    }

    #[test]
    fn backoff_starts_with_ack_wait_and_stays_below_max_deliver() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let a = args(&[]);
        assert_eq!(a.backoff(), ms(&[5_000, 10_000, 20_000]));
        let a = args(&[
            "--max-deliver",
            "3",
            "--ack-wait-ms",
            "100",
            "--backoff-ms",
            "200,300,400",
        ]);
        assert_eq!(a.backoff(), ms(&[100, 200]));
        assert_eq!(a.min_ack_wait(), Duration::from_millis(100));
        assert!(args(&["--max-deliver", "1"]).backoff().is_empty());
        assert!(args(&["--backoff-ms", ""]).backoff().is_empty());
        assert!(args(&["--backoff-ms", "none"]).backoff().is_empty());
        assert!(parse_schedule("1000,x").is_err());
    }
}
