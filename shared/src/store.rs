//! Publishing to a JetStream stream until it is stored: the gateway's task
//! batches and the workers' results both go through [`until_stored`], so
//! both ride out a lost acknowledgement and a cluster electing a new stream
//! leader the same way.

use crate::clock::now_ms;
use async_nats::jetstream;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use std::time::{Duration, Instant};

/// Publish `body` (carrying its `Nats-Msg-Id` in `headers`) on `subject` until
/// JetStream stores it, and return its stream sequence; `on_retry` is called
/// before each publish after the first (a metric).
///
/// A publish whose acknowledgement was lost (the connection dropped after
/// the message left) is sent again at once, up to [`PUBLISH_ATTEMPTS`]; one
/// that found no stream is sent again every [`ELECTION_PAUSE`] for up to
/// [`ELECTION_WAIT`], as a cluster electing a new stream leader answers so
/// meanwhile. The same message id each time, so JetStream stores it at most
/// once and answers a retry with the original sequence. Other refusals
/// (stream full) are final at once, and nothing is retried past `deadline_ms`.
pub async fn until_stored(
    js: &jetstream::Context,
    subject: String,
    headers: async_nats::HeaderMap,
    body: bytes::Bytes,
    deadline_ms: u64,
    on_retry: impl Fn(),
) -> Result<u64, PublishError> {
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        let stored = async {
            let ack = js
                .publish_with_headers(subject.clone(), headers.clone(), body.clone())
                .await?;
            ack.await
        };
        let e = match stored.await {
            Ok(ack) => return Ok(ack.sequence),
            Err(e) => e,
        };
        let lost = retriable(e.kind()) && attempt < PUBLISH_ATTEMPTS;
        let electing = e.kind() == PublishErrorKind::StreamNotFound
            && started.elapsed() + ELECTION_PAUSE < ELECTION_WAIT;
        if !(lost || electing) || now_ms() >= deadline_ms {
            return Err(e);
        }
        tracing::debug!(subject, attempt, error = %e, "batch not stored; sending again");
        on_retry();
        attempt += 1;
        if electing {
            tokio::time::sleep(ELECTION_PAUSE).await;
        }
    }
}

/// Publishes made for one batch whose acknowledgement was lost before its
/// requests are answered 503.
const PUBLISH_ATTEMPTS: u32 = 3;

/// How long a batch whose publish found no stream is tried again before its
/// requests are answered 503: a 3-node cluster whose `INFER_TASKS` leader
/// was killed answered "no stream" for 0.7 s, until it elected another.
const ELECTION_WAIT: Duration = Duration::from_secs(5);

/// Pause between those tries.
const ELECTION_PAUSE: Duration = Duration::from_millis(100);

/// Whether the publish may have been lost in transit (as opposed to refused).
fn retriable(kind: PublishErrorKind) -> bool {
    matches!(
        kind,
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::header::NATS_MESSAGE_ID;
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
