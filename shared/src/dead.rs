//! Dead letters: a batch JetStream gave up on (`MAX_DELIVER` deliveries
//! without an ack), or that a worker terminated as malformed or expired, is
//! copied to the `INFER_DEAD` stream before it leaves the work queue, with
//! headers saying why, so it can be inspected (and replayed) later instead
//! of vanishing.
//!
//! The copy is the original message's payload, byte for byte, on
//! `infer.dead.<reason>`, with `Nats-Msg-Id` `dead/<task stream sequence>`:
//! every gateway hears the same give-up advisory, and JetStream keeps the
//! first copy only.

use crate::clock::now_ms;
use crate::store;
use crate::subjects;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, context::PublishError};

/// Why a batch left the work queue unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Every delivery failed (`MAX_DELIVER` reached).
    Exhausted,
    /// Not a task batch (or over its limits): terminated by a worker.
    Malformed,
    /// Its deadline had passed when a worker got it: terminated uncomputed.
    Expired,
}

impl Reason {
    /// The name in the subject and in `Jetinfer-Dead-Reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exhausted => "exhausted",
            Self::Malformed => "malformed",
            Self::Expired => "expired",
        }
    }
}

/// What is known about a dead batch besides its payload.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    /// Why it died.
    pub reason: Reason,
    /// Its sequence in `INFER_TASKS` (the copy's message id).
    pub stream_seq: u64,
    /// The task subject it was published on.
    pub subject: &'a str,
    /// Deliveries made.
    pub attempts: u64,
    /// The worker that last had it, when known.
    pub worker: Option<&'a str>,
    /// The last error, when known.
    pub error: Option<&'a str>,
}

/// Headers of a dead letter (besides the message id).
pub const HEADER_REASON: &str = "Jetinfer-Dead-Reason";
/// Deliveries the batch had.
pub const HEADER_ATTEMPTS: &str = "Jetinfer-Attempts";
/// The worker that last had it.
pub const HEADER_LAST_WORKER: &str = "Jetinfer-Last-Worker";
/// What went wrong last.
pub const HEADER_LAST_ERROR: &str = "Jetinfer-Last-Error";
/// The task subject it came from.
pub const HEADER_SUBJECT: &str = "Jetinfer-Original-Subject";
/// Its sequence in `INFER_TASKS`.
pub const HEADER_SEQUENCE: &str = "Jetinfer-Original-Sequence";

/// The longest `Jetinfer-Last-Error` kept: a header line, not a log.
const ERROR_CHARS: usize = 300;

/// How long a copy is tried before the caller is told it failed.
const BURY_WAIT_MS: u64 = 10_000;

/// Copy `payload`, the batch described by `letter`, to `INFER_DEAD`; returns
/// once it is stored (or a copy with the same id already was).
pub async fn bury(
    js: &jetstream::Context,
    letter: &Letter<'_>,
    payload: bytes::Bytes,
) -> Result<u64, PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    let id = format!("dead/{}", letter.stream_seq);
    headers.insert(NATS_MESSAGE_ID, id.as_str());
    headers.insert(HEADER_REASON, letter.reason.as_str());
    headers.insert(HEADER_ATTEMPTS, letter.attempts.to_string().as_str());
    headers.insert(HEADER_SUBJECT, letter.subject);
    headers.insert(HEADER_SEQUENCE, letter.stream_seq.to_string().as_str());
    if let Some(worker) = letter.worker {
        headers.insert(HEADER_LAST_WORKER, worker);
    }
    if let Some(error) = letter.error {
        headers.insert(HEADER_LAST_ERROR, one_line(error).as_str());
    }
    let subject = subjects::dead_subject(letter.reason.as_str());
    store::until_stored(
        js,
        subject,
        headers,
        payload,
        now_ms() + BURY_WAIT_MS,
        || (),
    )
    .await
}

/// `text` as one header value: no line breaks, at most [`ERROR_CHARS`].
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_CHARS)
        .collect();
    flat.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_becomes_one_short_header_line() {
        assert_eq!(one_line("bad\r\nthing\t"), "bad  thing");
        assert_eq!(one_line(&"x".repeat(1000)).len(), ERROR_CHARS);
    }
}
