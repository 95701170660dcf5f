//! Bookkeeping: one call per outcome of a request, feeding everyone who keeps
//! account of it — Prometheus (`metrics`), the `/status` and dashboard
//! counters (`counters`), the dashboard's request events (`events`), the
//! `/recent_requests` ring (`request_log`) and the log — so they can never
//! disagree about what happened. Handlers and the result router call only this.

use crate::counters::Counters;
use crate::events;
use crate::http::error::ApiError;
use crate::metrics;
use crate::request_log::RequestLog;
use axum::http::StatusCode;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{preview, Fingerprint, RequestRecord, Task, TaskOutput};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// How one accepted request ended: what its record and metrics are made of.
pub struct Finished<'a> {
    /// The request.
    pub request_id: Uuid,
    /// Its task.
    pub task: Task,
    /// Its main text (the query for similarity): fingerprinted in the
    /// record, previewed only with `DASHBOARD_SHOW_INPUTS`.
    pub input: &'a str,
    /// Time from acceptance to answer.
    pub latency_ms: f64,
    /// The worker that computed it, when one did (output or per-request error).
    pub worker_id: Option<String>,
    /// Redeliveries before the answer.
    pub retries: u64,
    /// What the client was sent.
    pub outcome: Result<&'a TaskOutput, &'a ApiError>,
}

/// Where the gateway reports what became of each request; shared by the
/// handlers and the result router.
pub struct Report {
    gateway_id: String,
    nats: async_nats::Client,
    counters: Arc<Counters>,
    log: RequestLog,
    /// `DASHBOARD_SHOW_INPUTS`: records carry previews of content.
    show_inputs: bool,
    fingerprint: Fingerprint,
    /// Requests answered with a timeout whose waiter the handler has yet to
    /// drop: when it does, the client did not leave ([`Report::gave_up`]).
    timed_out: Mutex<HashSet<Uuid>>,
}

impl Report {
    /// Reports of `gateway_id`: events on `nats`, counts into `counters`,
    /// finished requests into `log`, with content previews only if `show_inputs`.
    pub fn new(
        gateway_id: String,
        nats: async_nats::Client,
        counters: Arc<Counters>,
        log: RequestLog,
        show_inputs: bool,
    ) -> Self {
        Self {
            gateway_id,
            nats,
            counters,
            log,
            show_inputs,
            fingerprint: Fingerprint::default(),
            timed_out: Mutex::default(),
        }
    }

    /// The counters, for `GET /status`.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The finished requests, for `GET /recent_requests`.
    pub fn log(&self) -> &RequestLog {
        &self.log
    }

    /// A body was refused before its request was accepted (not JSON, invalid, too large).
    /// Only the error code is logged: the message may quote the request (a
    /// duplicate label, a field's value), which is for its client alone.
    pub fn rejected(&self, error: &ApiError) {
        self.refused(error);
        tracing::debug!(code = error.parts().1, "request rejected");
    }

    /// A valid request was shed: `MAX_IN_FLIGHT` requests are already held.
    pub fn shed(&self, error: &ApiError) {
        self.refused(error);
    }

    fn refused(&self, error: &ApiError) {
        self.counters.rejected();
        metrics::request_refused(error.parts().1);
    }

    /// A request was accepted and is on its way to the batcher.
    pub fn submitted(&self) {
        self.counters.submitted();
    }

    /// An accepted request got its answer.
    pub async fn answered(&self, finished: Finished<'_>) {
        let Finished {
            request_id,
            task,
            input,
            latency_ms,
            worker_id,
            retries,
            outcome,
        } = finished;
        // The counters call a request retried only when a worker answered it
        // after a redelivery; Prometheus counts an abandoned one's retries too.
        if worker_id.is_some() && retries > 0 {
            self.counters.retried();
        }
        let (status, code, error) = match outcome {
            Ok(_) => {
                self.counters.completed();
                (StatusCode::OK, "ok", None)
            }
            Err(e) => {
                if matches!(e, ApiError::Timeout { .. }) {
                    self.counters.timed_out();
                    self.timed_out().insert(request_id);
                }
                self.counters.failed();
                let (status, code, _) = e.parts();
                (status, code, Some(e.to_string()))
            }
        };
        metrics::request_answered(task, code, latency_ms / 1000.0, retries);
        tracing::info!(request_id = %request_id, task = %task, worker_id = worker_id.as_deref(),
            attempt = retries + 1, latency_ms, outcome = code, error = error.as_deref(), "request answered");
        let record = RequestRecord {
            request_id,
            task,
            outcome: code.to_owned(),
            status: status.as_u16(),
            worker_id,
            retries,
            latency_ms,
            error,
            input_chars: input.chars().count(),
            input_hash: self.fingerprint.of(input),
            input: match self.show_inputs {
                true => preview(input),
                false => String::new(),
            },
            output: outcome.ok().map(|o| o.summary(self.show_inputs)),
            finished_at_ms: now_ms(),
        };
        events::request_finished(&self.nats, &self.gateway_id, &record).await;
        self.log.push(record);
    }

    fn timed_out(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        // Single inserts and removes: a panic cannot leave the set inconsistent.
        self.timed_out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handler of `request_id` stopped waiting before any answer came:
    /// after its timeout (reported already by [`Report::answered`]) or
    /// because its client hung up, which is counted here.
    pub fn gave_up(&self, request_id: Uuid) {
        if self.timed_out().remove(&request_id) {
            return;
        }
        self.counters.client_gone();
        metrics::client_gone();
        tracing::info!(request_id = %request_id, "client hung up before the answer");
    }

    /// A result came for a request given up on (timed out, client gone): the
    /// answer was late, not computed twice.
    pub fn late_result(&self, request_id: Uuid, batch_id: Uuid, worker_id: &str) {
        tracing::debug!(request_id = %request_id, batch_id = %batch_id,
            worker_id = %worker_id, "late result for a request given up on dropped");
    }

    /// A result found nobody waiting and nobody given up on: its request was
    /// answered already (a redelivered batch computed twice).
    pub fn duplicate_result(&self, request_id: Uuid, batch_id: Uuid, worker_id: &str) {
        self.counters.duplicate();
        tracing::debug!(request_id = %request_id, batch_id = %batch_id,
            worker_id = %worker_id, "duplicate result dropped");
    }
}

/// A request without a known API key was refused. Only Prometheus counts it:
/// the request counters start at validation, which it never reached.
pub fn unauthorized() {
    metrics::request_refused(ApiError::Unauthorized.parts().1);
}
