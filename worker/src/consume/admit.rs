//! Admission: decode and vet each pulled message before any compute.
//!
//! A message that is not a valid task batch (undecodable, over the limits)
//! is terminated — redelivery cannot fix it — and so is a batch whose
//! deadline passed (its clients stopped waiting), each copied to the dead
//! letters (`INFER_DEAD`, [`jetinfer_shared::dead`]) first. Async requests are then
//! claimed in the results bucket ([`super::deferred`]): those cancelled or
//! already answered leave the batch, and a batch left empty is acked.
//! Everything else is a [`Delivery`] to compute.

use super::deferred::Claims;
use super::Processor;
use crate::events::BatchRef;
use async_nats::jetstream::{AckKind, Message};
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::dead::{self, Reason};
use jetinfer_shared::protocol::{self, TaskBatch};

/// A decoded batch that is due: it will be computed.
pub struct Delivery {
    /// The JetStream message, to ack or keep alive.
    pub msg: Message,
    /// Its decoded payload.
    pub batch: TaskBatch,
    /// Delivery count (1 for the first).
    pub attempt: u64,
    /// This delivery's claims on the batch's async requests.
    pub claims: Claims,
}

impl Delivery {
    /// The batch as worker events describe it.
    pub fn batch_ref(&self) -> BatchRef {
        BatchRef {
            batch_id: Some(self.batch.batch_id),
            requests: self.batch.items.len(),
            attempt: self.attempt,
        }
    }

    /// Milliseconds since JetStream stored the batch: how long it waited in
    /// the work queue (over every delivery so far). The server's clock
    /// against this worker's, so across hosts only as exact as they agree.
    pub fn queued_ms(&self) -> f64 {
        let Ok(info) = self.msg.info() else {
            return 0.0;
        };
        let now_ns = i128::from(now_ms()) * 1_000_000;
        (now_ns - info.published.unix_timestamp_nanos()).max(0) as f64 / 1e6
    }
}

impl Processor {
    /// Decode and vet one message: `None` when it was malformed or expired
    /// (terminated and reported here), left nothing to compute (acked), or
    /// its async requests could not be claimed (left to redelivery).
    pub(super) async fn admit(&self, msg: Message) -> Option<Delivery> {
        let attempt = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
        let checked = protocol::decode::<TaskBatch>(&msg.payload)
            .map_err(|e| e.to_string())
            .and_then(|batch| match batch.check_limits() {
                Ok(()) => Ok(batch),
                Err(e) => Err(format!("malformed batch: {e}")),
            });
        let batch = match checked {
            Ok(batch) => batch,
            Err(error) => {
                if self
                    .bury(&msg, Reason::Malformed, attempt, Some(&error))
                    .await
                {
                    term(&msg).await;
                }
                self.report.malformed(&msg.subject, attempt, error).await;
                return None;
            }
        };
        let mut delivery = Delivery {
            msg,
            batch,
            attempt,
            claims: Claims::new(),
        };
        if attempt > 1 {
            self.report.redelivered(&delivery).await;
        }
        if now_ms() > delivery.batch.deadline_ms {
            if self
                .bury(&delivery.msg, Reason::Expired, attempt, None)
                .await
            {
                term(&delivery.msg).await;
            }
            self.report.expired(&delivery).await;
            return None;
        }
        let claimed = match self.deferred.claim(&mut delivery.batch).await {
            Ok(claimed) => claimed,
            Err(error) => {
                // No ack: JetStream redelivers the batch after its ack wait.
                tracing::warn!(batch_id = %delivery.batch.batch_id, attempt, error = %error,
                    "async requests not claimed; batch left to redelivery");
                return None;
            }
        };
        self.report
            .skipped(&delivery, claimed.cancelled, claimed.answered);
        delivery.claims = claimed.claims;
        if delivery.batch.items.is_empty() {
            if let Err(e) = delivery.msg.ack().await {
                tracing::warn!(batch_id = %delivery.batch.batch_id, error = %e, "ack failed");
            }
            return None;
        }
        Some(delivery)
    }
}

impl Processor {
    /// Copy `msg` to the dead letters before it is terminated; false when
    /// the copy could not be stored: then it is not terminated but left to
    /// redelivery, so it is tried again (and, past `MAX_DELIVER`, buried by
    /// a gateway as exhausted).
    async fn bury(&self, msg: &Message, reason: Reason, attempt: u64, error: Option<&str>) -> bool {
        let stream_seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
        let letter = dead::Letter {
            reason,
            stream_seq,
            subject: msg.subject.as_str(),
            attempts: attempt,
            worker: Some(&self.worker_id),
            error,
        };
        match dead::bury(&self.js, &letter, msg.payload.clone()).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(worker_id = %self.worker_id, stream_seq, reason = reason.as_str(),
                    error = %e, "dead letter not stored; batch left to redelivery");
                false
            }
        }
    }
}

/// Terminate `msg`: JetStream removes it and never redelivers it.
async fn term(msg: &Message) {
    if let Err(e) = msg.ack_with(AckKind::Term).await {
        tracing::warn!(error = %e, "term failed");
    }
}
