//! `dead replay <seq>|--all`: put dead letters back in the work queue.
//!
//! Each letter's batch goes back to its task subject as a new batch (new
//! batch id, `Nats-Msg-Id` `replay/<dead seq>`, so a replay sent twice
//! within JetStream's duplicate window is stored once), then the letter is
//! deleted. Its original clients stopped waiting long ago, so the answers go
//! to the async results bucket (`INFER_RESULTS_KV`) when it exists, under the
//! original request ids (`GET /result/<id>` on any gateway); without it
//! they come back to this command on a result subject of its own and are
//! printed. A letter that is not a task batch (malformed) cannot be replayed
//! and stays.

use anyhow::Context;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use async_nats::jetstream::Context as JetStream;
use futures::StreamExt;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{
    self, DeferredEntry, DeferredState, DeferredTag, ItemOutcome, ResultBatch, TaskBatch,
};
use jetinfer_shared::{store, subjects};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// Who the results bucket's `queued` entries say took a replayed request.
const REPLAYER: &str = "dead-replay";

/// Deadline of a batch replayed into a bucket that keeps entries for ever.
const UNBOUNDED_TTL: Duration = Duration::from_secs(3600);

/// Replay the letters at `seqs` of `dead` (every one when `all`, skipping
/// gaps); without a results bucket, print their answers, waiting up to `wait`.
pub async fn run(
    js: &JetStream,
    dead: &Stream,
    seqs: Vec<u64>,
    all: bool,
    wait: Duration,
) -> anyhow::Result<()> {
    let bucket = js.get_key_value(subjects::RESULTS_BUCKET).await.ok();
    let listener = format!("replay-{}", Uuid::new_v4().simple());
    let mut answers = match bucket {
        Some(_) => None,
        None => Some(listen(js, &listener).await?),
    };
    let mut expected = HashSet::new();
    let mut replayed = 0;
    for seq in seqs {
        let letter = match dead.get_raw_message(seq).await {
            Ok(letter) => letter,
            // Aged out or deleted since it was listed.
            Err(e) if all && e.kind() == RawMessageErrorKind::NoMessageFound => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "read dead letter {seq} of {} (admin only)",
                        subjects::DEAD_STREAM
                    )
                })
            }
        };
        let Ok(mut batch) = protocol::decode::<TaskBatch>(&letter.payload) else {
            println!("dead letter {seq} is not a task batch: left in place (`dead show {seq}`, `dead purge`)");
            continue;
        };
        let now = now_ms();
        batch.batch_id = Uuid::new_v4();
        batch.reply_subject = subjects::result_subject(&listener);
        for item in &mut batch.items {
            // The original claim is long gone: the replay answers no key.
            item.idempotency = None;
            item.deferred = bucket.as_ref().map(|_| DeferredTag { accepted_ms: now });
        }
        match &bucket {
            Some(kv) => {
                let ttl = kv.status().await?.max_age();
                let ttl = if ttl.is_zero() { UNBOUNDED_TTL } else { ttl };
                batch.deadline_ms = now + ttl.as_millis() as u64;
                queue_entries(kv, &batch, now).await?;
            }
            None => {
                batch.deadline_ms = now + wait.as_millis() as u64;
                expected.extend(batch.items.iter().map(|i| i.request_id));
            }
        }
        let stored = store::task_batch(js, &batch, &format!("replay/{seq}"), || ())
            .await
            .with_context(|| format!("put dead letter {seq} back in the work queue"))?;
        dead.delete_message(seq)
            .await
            .with_context(|| format!("delete replayed dead letter {seq}"))?;
        replayed += 1;
        println!(
            "replayed dead letter {seq} ({} {}, {} requests) as batch {} ({} seq {stored})",
            batch.model,
            batch.task,
            batch.items.len(),
            batch.batch_id,
            subjects::TASK_STREAM
        );
        if bucket.is_some() {
            for item in &batch.items {
                println!(
                    "  {}  answer: GET /result/{}",
                    item.request_id, item.request_id
                );
            }
        }
    }
    if replayed == 0 {
        println!("(nothing replayed)");
    }
    if let Some(answers) = answers.as_mut() {
        print_answers(answers, &mut expected, wait).await?;
    }
    Ok(())
}

/// A `queued` entry in the results bucket for every request of `batch`, so
/// the worker that takes it claims and answers it there.
async fn queue_entries(kv: &kv::Store, batch: &TaskBatch, now: u64) -> anyhow::Result<()> {
    let entry = DeferredEntry {
        task: batch.task,
        accepted_ms: now,
        state: DeferredState::Queued {
            gateway_id: REPLAYER.to_owned(),
        },
    };
    let value: bytes::Bytes = protocol::encode(&entry)?.into();
    for item in &batch.items {
        kv.put(item.request_id.to_string(), value.clone())
            .await
            .with_context(|| {
                format!("queue {} in {}", item.request_id, subjects::RESULTS_BUCKET)
            })?;
    }
    Ok(())
}

/// The stored results on this command's result subject, from now on.
async fn listen(
    js: &JetStream,
    listener: &str,
) -> anyhow::Result<async_nats::jetstream::consumer::pull::Ordered> {
    let results = js.get_stream(subjects::RESULT_STREAM).await?;
    let consumer = results
        .create_consumer(OrderedConfig {
            filter_subject: subjects::result_subject(listener),
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .context("read the replayed batches' results")?;
    Ok(consumer.messages().await?)
}

/// Print each answer of `expected` as it comes; an error when some did not
/// come within `wait`.
async fn print_answers(
    answers: &mut async_nats::jetstream::consumer::pull::Ordered,
    expected: &mut HashSet<Uuid>,
    wait: Duration,
) -> anyhow::Result<()> {
    println!(
        "no {} bucket: waiting up to {} s for {} answers",
        subjects::RESULTS_BUCKET,
        wait.as_secs(),
        expected.len()
    );
    let until = tokio::time::Instant::now() + wait;
    while !expected.is_empty() {
        let Ok(next) = tokio::time::timeout_at(until, answers.next()).await else {
            break;
        };
        let Some(Ok(msg)) = next else { continue };
        let Ok(batch) = protocol::decode::<ResultBatch>(&msg.payload) else {
            continue;
        };
        for item in batch.items {
            if !expected.remove(&item.request_id) {
                continue;
            }
            let outcome = match item.outcome {
                ItemOutcome::Ok(output) => format!("ok: {}", output.summary(false)),
                ItemOutcome::Error(e) => format!("error: {e}"),
                ItemOutcome::TooLarge { size, limit } => {
                    format!("too large to carry: {size} bytes, at most {limit}")
                }
            };
            println!(
                "  {}  {} attempt {}: {outcome}",
                item.request_id, batch.worker_id, batch.attempt
            );
        }
    }
    anyhow::ensure!(
        expected.is_empty(),
        "{} answers did not come within {} s (any that come later are stored in {})",
        expected.len(),
        wait.as_secs(),
        subjects::RESULT_STREAM
    );
    Ok(())
}
