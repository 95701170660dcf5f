//! `POST /infer`: validate, queue, wait for exactly one answer.

use super::error::{ApiError, ErrorBody};
use super::openapi::InferRequest;
use super::validate;
use super::AppState;
use crate::batcher::Queued;
use crate::events;
use crate::pending::{Pending, Reply};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{preview, BatchItem, ItemOutcome, RequestRecord, Task, TaskOutput};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A successful answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InferResponse {
    /// Id assigned by the gateway.
    pub request_id: Uuid,
    /// The task that ran.
    pub task: Task,
    /// Model that computed the output.
    pub model: String,
    /// Worker that computed the output.
    pub worker_id: String,
    /// Redeliveries before this answer (delivery count − 1).
    pub retries: u64,
    /// Time from acceptance to answer, in milliseconds.
    pub latency_ms: f64,
    /// Task-specific output.
    pub output: TaskOutput,
}

/// Removes the request from the pending map if the handler ends before its
/// answer (timeout, client disconnect), so an abandoned request frees its slot.
struct Waiting<'a> {
    pending: &'a Pending,
    id: Uuid,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending.forget(self.id);
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => Ok(()),
        Some(Ok(v)) if v.trim_start().starts_with("application/json") => Ok(()),
        Some(_) => Err(ApiError::UnsupportedMediaType),
    }
}

/// Run one task on one input; the answer comes back on this connection.
#[utoipa::path(post, path = "/infer", tag = "inference",
    request_body(content = InferRequest, content_type = "application/json"),
    security((), ("api_key" = [])),
    responses(
        (status = 200, body = InferResponse, description = "the output"),
        (status = 400, body = ErrorBody, description = "the body is not JSON or not an object"),
        (status = 401, body = ErrorBody, description = "API keys are set and none or a wrong one was sent"),
        (status = 413, body = ErrorBody, description = "the body exceeds MAX_BODY_BYTES"),
        (status = 415, body = ErrorBody, description = "Content-Type is not application/json"),
        (status = 422, body = ErrorBody, description = "a field is missing, unknown, of the wrong type, empty or over a limit"),
        (status = 429, body = ErrorBody, description = "MAX_IN_FLIGHT requests are already waiting; see Retry-After"),
        (status = 500, body = ErrorBody, description = "the model failed on this input"),
        (status = 503, body = ErrorBody, description = "the work queue is full or unreachable, or every retry failed; see Retry-After"),
        (status = 504, body = ErrorBody, description = "no answer within REQUEST_TIMEOUT_MS"),
    ))]
pub async fn infer(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<InferResponse>, ApiError> {
    let started = Instant::now();
    let validated = check_content_type(&headers)
        .and_then(|()| {
            body.map_err(|r| match r.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge(state.limits.max_body_bytes)
                }
                _ => ApiError::InvalidJson(r.body_text()),
            })
        })
        .and_then(|body| validate::parse(&body, &state.limits))
        .inspect_err(|e| {
            state.counters.rejected();
            crate::metrics::request_refused(e.parts().1);
            tracing::debug!(error = %e, "request rejected");
        })?;

    // Shed before queueing: a request over the limit costs nothing downstream.
    let _permit = state.in_flight.clone().try_acquire_owned().map_err(|_| {
        state.counters.rejected();
        let shed = ApiError::Overloaded(state.limits.max_in_flight);
        crate::metrics::request_refused(shed.parts().1);
        shed
    })?;
    let request_id = Uuid::new_v4();
    let task = validated.input.task();
    let input_text = validated.input.texts()[0].to_owned();
    let timeout = Duration::from_millis(state.limits.request_timeout_ms);
    let answer = state.pending.register(request_id);
    let _waiting = Waiting {
        pending: &state.pending,
        id: request_id,
    };
    state.counters.submitted();
    state
        .batcher
        .submit(Queued {
            item: BatchItem {
                request_id,
                input: validated.input,
            },
            priority: validated.priority,
            deadline_ms: now_ms() + state.limits.request_timeout_ms,
        })
        .await
        .map_err(|_| ApiError::ShuttingDown)?;

    let reply = tokio::time::timeout(timeout, answer).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut worker = None;
    let mut retries = 0;
    let mut output_preview = None;
    let result = match reply {
        Ok(Ok(Reply::Done {
            worker_id,
            model,
            attempt,
            outcome,
        })) => {
            retries = attempt.saturating_sub(1);
            worker = Some(worker_id.clone());
            if retries > 0 {
                state.counters.retried();
            }
            match outcome {
                ItemOutcome::Ok(output) => {
                    output_preview = Some(output.preview());
                    Ok(InferResponse {
                        request_id,
                        task,
                        model,
                        worker_id,
                        retries,
                        latency_ms,
                        output,
                    })
                }
                ItemOutcome::Error(message) => Err(ApiError::Worker {
                    message,
                    request_id,
                }),
            }
        }
        Ok(Ok(Reply::NotQueued(message))) => Err(ApiError::Unavailable {
            message,
            request_id,
        }),
        Ok(Ok(Reply::Abandoned {
            attempts,
            exhausted,
        })) => {
            retries = attempts.saturating_sub(1);
            Err(ApiError::Abandoned {
                attempts,
                reason: if exhausted {
                    "every delivery failed (MAX_DELIVER reached)"
                } else {
                    "terminated by a worker: its deadline had passed"
                },
                request_id,
            })
        }
        Ok(Err(_)) => Err(ApiError::ShuttingDown),
        Err(_) => {
            state.counters.timed_out();
            Err(ApiError::Timeout {
                timeout_ms: state.limits.request_timeout_ms,
                request_id,
            })
        }
    };
    let (status, outcome, error) = match &result {
        Ok(_) => {
            state.counters.completed();
            (StatusCode::OK, "ok", None)
        }
        Err(e) => {
            state.counters.failed();
            let (status, code, _) = e.parts();
            (status, code, Some(e.to_string()))
        }
    };
    crate::metrics::request_answered(task, outcome, latency_ms / 1000.0, retries);
    tracing::info!(request_id = %request_id, task = %task, worker_id = worker.as_deref(),
        attempt = retries + 1, latency_ms, outcome, error = error.as_deref(), "request answered");
    let record = RequestRecord {
        request_id,
        task,
        outcome: outcome.to_owned(),
        status: status.as_u16(),
        worker_id: worker,
        retries,
        latency_ms,
        error,
        input: preview(&input_text),
        output: output_preview,
        finished_at_ms: now_ms(),
    };
    events::request_finished(&state.nats, &state.gateway_id, &record).await;
    state.requests.push(record);
    result.map(Json)
}
