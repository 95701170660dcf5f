//! Async requests: `POST /infer/async` queues a request and answers 202 at
//! once with where to fetch its answer; `GET /result/{id}` tells where it
//! stands, then gives the answer `/infer` would have given;
//! `DELETE /result/{id}` cancels or forgets it. The state lives in the
//! `INFER_RESULTS_KV` bucket ([`crate::deferred`]), so any gateway answers
//! for any request and a gateway that dies after its 202 loses nothing.

use super::error::{ApiError, ErrorBody};
use super::infer::{accept, refused, respond, Accepted};
use super::request::{InferRequest, RawImage, UploadTask};
use super::AppState;
use crate::batcher::Queued;
use crate::idempotency::rules;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{BatchItem, DeferredState, DeferredTag, ModelName, Priority};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

/// `POST /infer/async`'s answer: the request is in the work queue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AsyncAccepted {
    /// Id of the request, for `GET /result/{id}`.
    pub request_id: Uuid,
    /// Where its answer will be: `/result/<request_id>` on any gateway.
    pub status_url: String,
    /// Always `queued`.
    pub status: AsyncStatus,
}

/// Where an async request stands before its answer.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AsyncStatus {
    /// Waiting in the work queue.
    Queued,
    /// A worker is computing it.
    Running,
}

/// `GET /result/{id}` before the answer is there.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AsyncPending {
    /// The request asked about.
    pub request_id: Uuid,
    /// `queued` or `running`.
    pub status: AsyncStatus,
}

/// What `DELETE /result/{id}` did.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Deletion {
    /// It was queued or running: it will not be computed (or its answer
    /// not kept).
    Cancelled,
    /// It was answered: the answer is gone.
    Forgotten,
}

/// `DELETE /result/{id}`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    /// The request deleted.
    pub request_id: Uuid,
    /// `cancelled` or `forgotten`.
    pub status: Deletion,
}

/// Queue one task on one input (the body and query of `POST /infer`) and
/// answer at once; the answer is kept `ASYNC_RESULT_TTL_S` (1 h) at
/// `status_url` on every gateway.
#[utoipa::path(post, path = "/infer/async", tag = "inference",
    request_body(description = "What `POST /infer` takes: a JSON body naming its task, or a raw photo (PNG or JPEG) with `?task=classify_image`",
        content((InferRequest = "application/json"), (RawImage = "image/png"), (RawImage = "image/jpeg"))),
    params(
        ("task" = Option<UploadTask>, Query, description = "As for `POST /infer`: `classify_image` for a raw photo upload"),
        ("priority" = Option<Priority>, Query, description = "As for `POST /infer`: raw photo uploads only"),
        ("model" = Option<ModelName>, Query, description = "As for `POST /infer`: raw photo uploads only"),
    ),
    security((), ("api_key" = [])),
    responses(
        (status = 202, body = AsyncAccepted, description = "queued (JetStream stored it): poll `status_url`",
            headers(("Location" = String, description = "the status_url"))),
        (status = 400, body = ErrorBody, description = "the body is not JSON or not an object, a query parameter is wrong (`invalid_query`), or an Idempotency-Key was sent (`idempotency_key_not_supported`)"),
        (status = 401, body = ErrorBody, description = "API keys are set and none or a wrong one was sent"),
        (status = 413, body = ErrorBody, description = "the body exceeds MAX_BODY_BYTES (JSON) or MAX_IMAGE_BYTES (a raw photo), or the photo is over 8192 pixels a side"),
        (status = 415, body = ErrorBody, description = "Content-Type is neither application/json nor image/*"),
        (status = 422, body = ErrorBody, description = "a field is missing, unknown, of the wrong type, empty or over a limit, or the photo does not decode"),
        (status = 429, body = ErrorBody, description = "MAX_IN_FLIGHT requests are already being handled; see Retry-After"),
        (status = 503, body = ErrorBody, description = "no live worker serves the request's model for its task (`no_worker`), or the work queue or the results bucket is unreachable; see Retry-After"),
    ))]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if headers.contains_key(super::keyed::IDEMPOTENCY_KEY) {
        let error = ApiError::KeyOnAsync;
        state.report.rejected(&error);
        return Err(error);
    }
    let Accepted {
        _slot,
        task,
        model,
        priority,
        input,
        ..
    } = Box::pin(accept(&state, &uri, &headers, body)).await?;
    drop(headers);
    let request_id = Uuid::new_v4();
    let accepted_ms = now_ms();
    let unavailable = unavailable(request_id);
    (state.deferred)
        .create(request_id, task, accepted_ms)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let (stored, queued) = oneshot::channel();
    let request = Queued {
        item: BatchItem {
            request_id,
            input,
            idempotency: None,
            deferred: Some(DeferredTag { accepted_ms }),
        },
        model,
        priority,
        deadline_ms: accepted_ms + state.async_ttl.as_millis() as u64,
        claim_revision: None,
        stored: Some(stored),
    };
    let outcome = match state.batcher.submit(request).await {
        Err(e) => Err(refused(e)),
        Ok(()) => {
            let wait = Duration::from_millis(state.limits.request_timeout_ms);
            match tokio::time::timeout(wait, queued).await {
                Ok(Ok(Ok(_seq))) => Ok(()),
                Ok(Ok(Err(reason))) => Err(unavailable(reason)),
                Ok(Err(_)) => Err(ApiError::ShuttingDown),
                Err(_) => Err(unavailable(format!(
                    "the work queue did not store the request within {} ms",
                    wait.as_millis()
                ))),
            }
        }
    };
    if let Err(error) = outcome {
        // Never answered 202: its entry goes, so a late publish is skipped.
        state.deferred.discard(request_id).await;
        state.report.rejected(&error);
        return Err(error);
    }
    crate::metrics::async_request("accepted");
    tracing::info!(request_id = %request_id, task = %task, "async request queued");
    let status_url = format!("/result/{request_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(AsyncAccepted {
            request_id,
            status_url: status_url.clone(),
            status: AsyncStatus::Queued,
        }),
    )
        .into_response();
    if let Ok(location) = status_url.parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Where an async request stands, then its answer: the body and status
/// `POST /infer` would have answered with, for as long as
/// `ASYNC_RESULT_TTL_S` keeps it. Any gateway answers for any request.
#[utoipa::path(get, path = "/result/{id}", tag = "inference",
    params(("id" = Uuid, Path, description = "The request_id `POST /infer/async` answered with")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, body = crate::http::infer::InferResponse, description = "the answer"),
        (status = 202, body = AsyncPending, description = "not answered yet: `queued` or `running`; see Retry-After",
            headers(("Retry-After" = String, description = "seconds until it is worth asking again"))),
        (status = 401, body = ErrorBody, description = "API keys are set and none or a wrong one was sent"),
        (status = 404, body = ErrorBody, description = "no such request: unknown, not a request id, cancelled, or expired after ASYNC_RESULT_TTL_S (`result_not_found`)"),
        (status = 413, body = ErrorBody, description = "the answer was too large to carry (`result_too_large`)"),
        (status = 500, body = ErrorBody, description = "the model failed on this input (`worker_error`)"),
        (status = 503, body = ErrorBody, description = "every delivery failed (`retries_exhausted`), or the results bucket is unreachable; see Retry-After"),
    ))]
pub async fn result(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let request_id = request_id(&id)?;
    let found = (state.deferred.get(request_id).await)
        .map_err(|e| unavailable(request_id)(e.to_string()))?;
    let Some((entry, _)) = found else {
        return Err(not_found(request_id));
    };
    let status = match entry.state {
        DeferredState::Done(stored) => {
            let (reply, latency_ms) = rules::replayed(stored);
            let answer = respond(Ok(reply), request_id, entry.task, latency_ms);
            return answer.result.map(|done| Json(done).into_response());
        }
        DeferredState::Queued { .. } => AsyncStatus::Queued,
        DeferredState::Running { .. } => AsyncStatus::Running,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::RETRY_AFTER, "1")],
        Json(AsyncPending { request_id, status }),
    )
        .into_response())
}

/// Cancel an async request (a queued one is never computed, a running one's
/// answer is not kept) or forget its answer.
#[utoipa::path(delete, path = "/result/{id}", tag = "inference",
    params(("id" = Uuid, Path, description = "The request_id `POST /infer/async` answered with")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, body = Deleted, description = "`cancelled` (it was queued or running) or `forgotten` (it was answered)"),
        (status = 401, body = ErrorBody, description = "API keys are set and none or a wrong one was sent"),
        (status = 404, body = ErrorBody, description = "no such request: unknown, not a request id, already deleted, or expired (`result_not_found`)"),
        (status = 503, body = ErrorBody, description = "the results bucket is unreachable; see Retry-After"),
    ))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let request_id = request_id(&id)?;
    let deleted = (state.deferred.delete(request_id).await)
        .map_err(|e| unavailable(request_id)(e.to_string()))?;
    let Some(entry) = deleted else {
        return Err(not_found(request_id));
    };
    let status = match entry.state {
        DeferredState::Done(_) => Deletion::Forgotten,
        DeferredState::Queued { .. } | DeferredState::Running { .. } => Deletion::Cancelled,
    };
    crate::metrics::async_request(match status {
        Deletion::Cancelled => "cancelled",
        Deletion::Forgotten => "forgotten",
    });
    tracing::info!(request_id = %request_id, ?status, "async request deleted");
    Ok(Json(Deleted { request_id, status }))
}

/// The request id in the path; anything else names no request.
fn request_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(id).map_err(|_| {
        ApiError::UnknownResult(format!(
            "no async request {id:?}: a request id is the UUID POST /infer/async answered with"
        ))
    })
}

/// 503 `unavailable` for `request_id`, saying why (the work queue or the
/// results bucket failed).
fn unavailable(request_id: Uuid) -> impl Fn(String) -> ApiError {
    move |message| ApiError::Unavailable {
        message,
        request_id,
    }
}

fn not_found(request_id: Uuid) -> ApiError {
    ApiError::UnknownResult(format!(
        "no async request {request_id}: unknown, cancelled, or expired (answers are kept ASYNC_RESULT_TTL_S)"
    ))
}
