//! Publishing to a JetStream stream until it is stored: the gateway's task
//! batches ([`task_batch`]) and the workers' results both go through [`until_stored`], so
//! both ride out a lost acknowledgement and a cluster electing a new stream
//! leader the same way.

use crate::clock::now_ms;
use crate::protocol::{self, TaskBatch};
use crate::subjects;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use std::time::{Duration, Instant};

/// Why a task batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The batch does not encode (it never left this process).
    #[error("cannot encode the batch: {0}")]
    Encode(#[from] crate::protocol::WireError),
    /// JetStream did not store it (see [`until_stored`]).
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Publish task batch `batch` to the work queue on its task subject, with
/// the headers a person reads with the nats CLI and `Nats-Msg-Id` =
/// `msg_id`, until JetStream stores it (see [`until_stored`]; never past
/// its deadline); returns its stream sequence. The gateway sends every
/// batch through here, and `dead replay` the batches it puts back.
pub async fn task_batch(
    js: &jetstream::Context,
    batch: &TaskBatch,
    msg_id: &str,
    on_retry: impl Fn(),
) -> Result<u64, BatchError> {
    let body: bytes::Bytes = protocol::encode(batch)?.into();
    let mut headers = subjects::payload_headers(&batch.batch_id, batch.items.len());
    headers.insert(NATS_MESSAGE_ID, msg_id);
    headers.insert(subjects::HEADER_TASK, batch.task.as_str());
    headers.insert(subjects::HEADER_MODEL, batch.model.as_str());
    headers.insert(
        subjects::HEADER_DEADLINE,
        batch.deadline_ms.to_string().as_str(),
    );
    let subject = subjects::task_subject(&batch.model, batch.task, batch.priority);
    Ok(until_stored(js, subject, headers, body, batch.deadline_ms, on_retry).await?)
}

/// Publish `body` (carrying its `Nats-Msg-Id` in `headers`) on `subject` until
/// JetStream stores it, and return its stream sequence; `on_retry` is called
/// before each publish after the first (a metric).
///
/// A publish not acknowledged within [`FIRST_ACK_WAIT`] is sent again, and
/// again with twice the wait each time up to [`LONGEST_ACK_WAIT`], for up to
/// [`RESEND_FOR`]: the stream leader it reached may have died with it (a
/// 3-node cluster whose `INFER_TASKS` leader was killed left such publishes
/// unanswered until async-nats gave up on them after 5 s, the longest pause
/// in traffic). One that found no stream is sent again every
/// [`RESEND_PAUSE`] for up to [`ELECTION_WAIT`], as a cluster electing a new
/// stream leader answers so meanwhile. The same message id each time, so
/// JetStream stores it at most once and answers a resend with the original
/// sequence. Other refusals (stream full) are final at once, and nothing is
/// sent again past `deadline_ms`.
pub async fn until_stored(
    js: &jetstream::Context,
    subject: String,
    headers: async_nats::HeaderMap,
    body: bytes::Bytes,
    deadline_ms: u64,
    on_retry: impl Fn(),
) -> Result<u64, PublishError> {
    let started = Instant::now();
    let mut wait = FIRST_ACK_WAIT;
    loop {
        let stored = async {
            let ack = js
                .publish_with_headers(subject.clone(), headers.clone(), body.clone())
                .await?;
            ack.await
        };
        let e = match tokio::time::timeout(wait, stored).await {
            Ok(Ok(ack)) => return Ok(ack.sequence),
            Ok(Err(e)) => e,
            Err(_) => PublishError::new(PublishErrorKind::TimedOut),
        };
        let again = match e.kind() {
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                started.elapsed() < RESEND_FOR
            }
            PublishErrorKind::StreamNotFound => started.elapsed() + RESEND_PAUSE < ELECTION_WAIT,
            _ => false,
        };
        if !again || now_ms() >= deadline_ms {
            return Err(e);
        }
        tracing::debug!(subject, error = %e, "not stored; sending again");
        on_retry();
        if e.kind() == PublishErrorKind::TimedOut {
            wait = (wait * 2).min(LONGEST_ACK_WAIT);
        } else {
            tokio::time::sleep(RESEND_PAUSE).await;
        }
    }
}

/// How long the first publish of a message waits for its acknowledgement
/// before it is sent again: an acknowledgement takes milliseconds even with
/// an fsync per write on three nodes (p99 143 ms at concurrency 8 on 2 cores).
const FIRST_ACK_WAIT: Duration = Duration::from_secs(1);

/// The longest wait for one acknowledgement, so a slow server is not
/// flooded with copies.
const LONGEST_ACK_WAIT: Duration = Duration::from_secs(4);

/// How long unacknowledged publishes are sent again: well inside the
/// 2-minute duplicate window, within which a resent copy is never stored twice.
const RESEND_FOR: Duration = Duration::from_secs(60);

/// How long a message whose publish found no stream is tried again before
/// it is refused: a 3-node cluster whose `INFER_TASKS` leader was killed
/// answered "no stream" for 0.7 s, until it elected another.
const ELECTION_WAIT: Duration = Duration::from_secs(20);

/// Pause before a resend that was answered at once (no stream, broken pipe).
const RESEND_PAUSE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::header::NATS_MESSAGE_ID;
    use futures::StreamExt;
    use jetinfer_testsupport::NatsServer;

    const SUBJECT: &str = "infer.task.toy.embed.normal";

    fn message() -> (async_nats::HeaderMap, bytes::Bytes) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, uuid::Uuid::new_v4().to_string().as_str());
        (headers, bytes::Bytes::from_static(b"batch"))
    }

    fn stream() -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: "ELECTED".into(),
            subjects: vec![SUBJECT.into()],
            ..Default::default()
        }
    }

    /// A stream leader that dies after the publish reached it never answers
    /// (here a plain subscriber that drops the first copy): the copy sent
    /// again is answered, well before async-nats's own 5 s would give up.
    #[tokio::test]
    async fn an_unanswered_publish_is_sent_again_before_its_deadline() {
        let nats = NatsServer::start();
        let client = nats.client().await;
        let js = jetstream::new(client.clone());
        let (headers, body) = message();
        let id = headers.get(NATS_MESSAGE_ID).cloned();
        let mut copies = client.subscribe(SUBJECT).await.unwrap();
        client.flush().await.unwrap();
        let leader = async {
            let _lost = copies.next().await.expect("the first copy");
            let again = copies.next().await.expect("a second copy");
            let again_id = again.headers.as_ref().and_then(|h| h.get(NATS_MESSAGE_ID));
            assert_eq!(again_id, id.as_ref(), "the same message id");
            let ack = r#"{"stream":"ELECTED","seq":7}"#;
            (client.publish(again.reply.expect("a reply subject"), ack.into()))
                .await
                .unwrap();
        };
        let publish = until_stored(&js, SUBJECT.into(), headers, body, now_ms() + 4_000, || ());
        let (stored, ()) = tokio::join!(publish, leader);
        assert_eq!(stored.expect("stored by the second copy"), 7);
    }

    #[tokio::test]
    async fn a_publish_that_finds_no_stream_waits_for_one_to_answer() {
        let nats = NatsServer::start();
        let js = jetstream::new(nats.client().await);
        let (headers, body) = message();
        // The stream appears 500 ms after the publish, as a new leader would.
        let later = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            js.create_stream(stream()).await.expect("create the stream");
        };
        let publish = until_stored(&js, SUBJECT.into(), headers, body, now_ms() + 60_000, || ());
        let (stored, ()) = tokio::join!(publish, later);
        assert_eq!(stored.expect("stored once the stream exists"), 1);
    }

    #[tokio::test]
    async fn no_stream_is_final_at_the_deadline_and_a_full_one_at_once() {
        let nats = NatsServer::start();
        let js = jetstream::new(nats.client().await);
        let (headers, body) = message();
        let e = until_stored(&js, SUBJECT.into(), headers, body, now_ms() + 300, || ())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), PublishErrorKind::StreamNotFound);

        js.create_stream(jetstream::stream::Config {
            max_messages: 1,
            discard: jetstream::stream::DiscardPolicy::New,
            ..stream()
        })
        .await
        .unwrap();
        let (headers, body) = message();
        until_stored(
            &js,
            SUBJECT.into(),
            headers,
            body.clone(),
            now_ms() + 60_000,
            || (),
        )
        .await
        .expect("the first fits");
        let (headers, _) = message();
        let full = until_stored(&js, SUBJECT.into(), headers, body, now_ms() + 60_000, || ())
            .await
            .unwrap_err();
        assert_ne!(
            full.kind(),
            PublishErrorKind::StreamNotFound,
            "a full stream is a refusal of its own: {full}"
        );
    }
}
