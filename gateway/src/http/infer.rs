//! `POST /infer`: read, admit, (with an `Idempotency-Key`: claim the key or
//! replay its answer), submit, await the one reply, respond. Each step is a
//! function below; `infer` strings them together and reports the outcome
//! once, through [`crate::report`].

use super::error::{ApiError, ErrorBody};
use super::keyed::{self, Tenant};
use super::request::{InferRequest, Pending, Photo, RawImage, UploadTask};
use super::validate;
use super::AppState;
use crate::batcher::{Queued, SubmitError};
use crate::idempotency::rules::{self, Settle};
use crate::idempotency::{Begin, Claim, KeyError};
use crate::report::Finished;
use crate::waiters::{Reply, Waiters};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::{
    body_hash, kv_key, BatchItem, ItemOutcome, ModelName, Priority, StoredAnswer, Task, TaskInput,
    TaskOutput,
};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
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
    /// True when an identical request's answer was reused (within
    /// `CACHE_TTL_S`): `worker_id` and `model` are the ones that computed it.
    pub cached: bool,
}

/// Removes the request from the waiter map if the handler ends before its
/// answer (timeout, client disconnect), so an abandoned request frees its slot.
pub(super) struct Waiting<'a> {
    waiters: &'a Waiters,
    id: Uuid,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters.forget(self.id);
    }
}

/// What a reply means for the client, and who answered it, for the records.
pub(super) struct Answer {
    pub(super) result: Result<InferResponse, ApiError>,
    pub(super) worker_id: Option<String>,
    pub(super) retries: u64,
}

/// Run one task on one input; the answer comes back on this connection.
///
/// With an `Idempotency-Key`, the same key (per API key) within
/// `IDEMPOTENCY_TTL_S` gets the same answer and the model runs once: a retry
/// gets the stored answer with `Idempotent-Replayed: true`, or waits for the
/// first request's answer while it computes (504 after its own timeout: retry
/// again), whichever gateway it reaches.
#[utoipa::path(post, path = "/infer", tag = "inference",
    request_body(description = "A JSON body naming its task; or a raw photo (PNG or JPEG) with `?task=classify_image`",
        content((InferRequest = "application/json"), (RawImage = "image/png"), (RawImage = "image/jpeg"))),
    params(
        ("task" = Option<UploadTask>, Query, description = "`classify_image`, what a raw photo upload is (also when omitted). A JSON body names its own task; its query is checked, not read"),
        ("priority" = Option<Priority>, Query, description = "Raw photo uploads only: the queue to wait in (a JSON body's query is checked, not read)"),
        ("model" = Option<ModelName>, Query, description = "Raw photo uploads only: the model to run on (a JSON body names its own `model`; its query is checked, not read)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
            description = "Makes retries safe: a retry with the same key and body within IDEMPOTENCY_TTL_S (600 s) gets the first answer (waiting for it if it is still computing) and the model runs once. 1 to 255 visible ASCII characters; keys of different API keys never collide."),
    ),
    security((), ("api_key" = [])),
    responses(
        (status = 200, body = InferResponse, description = "the output",
            headers(("Idempotent-Replayed" = String, description = "`true` when this answer was stored earlier under the request's Idempotency-Key (any stored answer, errors included, carries it)"))),
        (status = 400, body = ErrorBody, description = "the body is not JSON or not an object, a query parameter is wrong (`invalid_query`), or the Idempotency-Key header is not 1 to 255 visible ASCII characters (`invalid_idempotency_key`)"),
        (status = 401, body = ErrorBody, description = "API keys are set and none or a wrong one was sent"),
        (status = 413, body = ErrorBody, description = "the body exceeds MAX_BODY_BYTES (JSON) or MAX_IMAGE_BYTES (a raw photo), or the photo is over 8192 pixels a side (`image_too_large`)"),
        (status = 415, body = ErrorBody, description = "Content-Type is neither application/json nor image/*"),
        (status = 422, body = ErrorBody, description = "a field is missing, unknown, of the wrong type, empty or over a limit; the photo is not a PNG or JPEG that decodes (`invalid_image`); or the Idempotency-Key was used with another body (`idempotency_key_reused`)"),
        (status = 429, body = ErrorBody, description = "MAX_IN_FLIGHT requests are already waiting; see Retry-After"),
        (status = 500, body = ErrorBody, description = "the model failed on this input"),
        (status = 503, body = ErrorBody, description = "no live worker serves the request's model for its task (`no_worker`, naming the model, at once), the work queue is full or unreachable, or every retry failed; see Retry-After"),
        (status = 504, body = ErrorBody, description = "no answer within REQUEST_TIMEOUT_MS"),
    ))]
pub async fn infer(
    State(state): State<Arc<AppState>>,
    tenant: Option<Extension<Tenant>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let key = keyed::idempotency_key(&headers).inspect_err(|e| state.report.rejected(e))?;
    let accepted = Box::pin(accept(&state, &uri, &headers, body)).await?;
    let keyed = key.map(|key| {
        let tenant = tenant.as_ref().map_or("", |Extension(t)| t.0.as_str());
        let hash = body_hash(&accepted.input, accepted.priority, accepted.named.as_ref());
        (kv_key(tenant, key), hash)
    });
    // The header values are slices of the buffer hyper read the head into
    // (8 KiB): dropped now, it is not held while the request waits.
    drop(headers);
    let served = Box::pin(serve(&state, accepted, keyed, started)).await?;
    let response = match served.result {
        Ok(done) => Json(done).into_response(),
        Err(error) => error.into_response(),
    };
    Ok(match served.replayed {
        true => keyed::replayed(response),
        false => response,
    })
}

/// What became of an accepted request: its answer (or the error it ended
/// in), and whether that is an answer stored earlier under its
/// `Idempotency-Key`.
pub(crate) struct Served {
    /// The answer, or the error the request ended in.
    pub(crate) result: Result<InferResponse, ApiError>,
    /// True when `result` is a replay of a stored answer.
    pub(crate) replayed: bool,
}

/// Answer an accepted request, however it arrived (`POST /infer`, or the
/// NATS API, `crate::service`): from the cache, by its key's rules when it
/// has one (`(kv key, body hash)`: claim or replay), or queued and awaited,
/// within `REQUEST_TIMEOUT_MS` of `started`. `Err`: refused before it was
/// queued (a replay and an answer, errors included, are `Ok`).
pub(crate) async fn serve(
    state: &AppState,
    accepted: Accepted,
    keyed: Option<(String, String)>,
    started: Instant,
) -> Result<Served, ApiError> {
    let timeout_ms = state.limits.request_timeout_ms;
    let deadline = tokio::time::Instant::from_std(started + Duration::from_millis(timeout_ms));
    let Accepted {
        _slot,
        task,
        model,
        priority,
        input,
        text,
        ..
    } = accepted;
    let fresh = |result| Served {
        result,
        replayed: false,
    };
    let cache_key = state.cache.key(&model, &input);
    // A request with an Idempotency-Key is answered by its key's rules
    // (replay, 422 for another body); its answer still feeds the cache.
    let cached = cache_key.as_ref().filter(|_| keyed.is_none());
    if let Some(hit) = cached.and_then(|k| state.cache.get(k)) {
        let answer = Box::pin(from_cache(state, hit, task, &text, started)).await;
        return Ok(fresh(Ok(answer)));
    }
    let request_id = Uuid::new_v4();
    let claim = match keyed {
        None => None,
        // Boxed, like the other key steps: the bucket's futures are kilobytes,
        // and inline they would size every request's handler while it waits.
        Some(keyed) => match Box::pin(begin(state, keyed, request_id, deadline)).await? {
            Begin::Run(claim) => Some(claim),
            Begin::Replay { request_id, answer } => return Ok(replay(request_id, task, answer)),
        },
    };
    // Boxed, as are the key steps and the report: a future is as large as its
    // largest step, and this one waits in the smallest (`await_reply`) for as
    // long as the answer takes; inline, submit (~1 KB) and the report (~1 KB)
    // would double every waiting request's memory.
    let queue = Queue { model, priority };
    let submitted = Box::pin(submit(state, request_id, input, queue, claim.as_ref())).await;
    let (waiting, answer) = match submitted {
        Ok(submitted) => submitted,
        Err(e) => {
            if let Some(claim) = &claim {
                Box::pin(state.idempotency.release(claim)).await;
            }
            return Err(e);
        }
    };
    let reply = await_reply(answer, waiting.id, timeout_ms, deadline).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let (Some(claim), Ok(reply)) = (&claim, &reply) {
        // Before the client hears it: every retry gets this very answer.
        Box::pin(settle(state, claim, reply, latency_ms)).await;
    }
    let answer = respond(reply, waiting.id, task, latency_ms);
    if let (Some(key), Ok(done)) = (cache_key, &answer.result) {
        let kept = crate::cache::Cached {
            output: done.output.clone(),
            model: done.model.clone(),
            worker_id: done.worker_id.clone(),
        };
        state.cache.put(key, kept);
    }
    Box::pin(state.report.answered(Finished {
        request_id: waiting.id,
        task,
        input: &text,
        latency_ms,
        worker_id: answer.worker_id,
        retries: answer.retries,
        outcome: answer.result.as_ref().map(|r| &r.output),
    }))
    .await;
    Ok(fresh(answer.result))
}

/// A request read, validated, routed to a live model and made ready to
/// queue (a photo decoded), holding one of the `MAX_IN_FLIGHT` slots.
pub(crate) struct Accepted {
    /// Its `MAX_IN_FLIGHT` slot, freed when this is dropped.
    pub(super) _slot: tokio::sync::OwnedSemaphorePermit,
    /// The task asked for.
    pub(super) task: Task,
    /// The model the request named, if it named one.
    pub(super) named: Option<ModelName>,
    /// The model it runs on (named, or routed).
    pub(super) model: ModelName,
    /// The queue it waits in.
    pub(super) priority: Priority,
    /// The validated input, as a worker gets it.
    pub(super) input: TaskInput,
    /// What the records fingerprint: the main text (a photo has none).
    pub(super) text: String,
}

/// Read, validate and route a request to `/infer` (or `/infer/async`), and
/// refuse what no live worker can compute or this gateway cannot hold,
/// before anything downstream is spent on it; a refusal is reported here.
pub(super) async fn accept(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let request = Box::pin(read(state, uri, headers, body))
        .await
        .inspect_err(|e| state.report.rejected(e))?;
    Box::pin(admit(state, request)).await
}

/// Route a validated request to a live model and make it ready to queue,
/// however it arrived; a refusal is reported here.
pub(crate) async fn admit(state: &AppState, request: InferRequest) -> Result<Accepted, ApiError> {
    let task = request.task();
    let named = request.model().cloned();
    let model = match &named {
        Some(model) => model.clone(),
        None => (state.routes).pick(task, |m| state.fleet.serving(m, task)),
    };
    state
        .fleet
        .check(&model, task)
        .map_err(ApiError::from)
        .inspect_err(|e| state.report.rejected(e))?;
    // Shed before queueing: a request over the limit costs nothing downstream.
    let slot = state
        .admission
        .admit()
        .inspect_err(|e| state.report.shed(e))?;
    let priority = request.priority();
    let input = match request.into_input() {
        Pending::Ready(input) => input,
        Pending::Image(bytes) => Box::pin(state.images.prepare(bytes))
            .await
            .inspect_err(|e| state.report.rejected(e))?,
    };
    let text = input
        .texts()
        .first()
        .map_or_else(String::new, |t| t.to_string());
    Ok(Accepted {
        _slot: slot,
        task,
        named,
        model,
        priority,
        input,
        text,
    })
}

/// The answer of an identical request, from the cache: reported like any
/// other, with a fresh request id and `"cached": true`.
async fn from_cache(
    state: &AppState,
    hit: crate::cache::Cached,
    task: Task,
    text: &str,
    started: Instant,
) -> InferResponse {
    let request_id = Uuid::new_v4();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    state.report.submitted();
    state
        .report
        .answered(Finished {
            request_id,
            task,
            input: text,
            latency_ms,
            worker_id: Some(hit.worker_id.clone()),
            retries: 0,
            outcome: Ok(&hit.output),
        })
        .await;
    InferResponse {
        request_id,
        task,
        model: hit.model,
        worker_id: hit.worker_id,
        retries: 0,
        latency_ms,
        output: hit.output,
        cached: true,
    }
}

/// Claim the request's key (`(kv key, body hash)`) for `request_id`, or learn
/// the answer stored under it; a refusal is reported and shaped here.
async fn begin(
    state: &AppState,
    (key, body_hash): (String, String),
    request_id: Uuid,
    deadline: tokio::time::Instant,
) -> Result<Begin, ApiError> {
    let timeout_ms = state.limits.request_timeout_ms;
    state
        .idempotency
        .begin(key, body_hash, request_id, deadline)
        .await
        .map_err(|e| key_error(e, timeout_ms, request_id))
        .inspect_err(|e| state.report.rejected(e))
}

/// Leave under the key what the reply of its request means for a retry.
async fn settle(state: &AppState, claim: &Claim, reply: &Reply, latency_ms: f64) {
    match rules::settle(reply, latency_ms) {
        Settle::Store(answer) => state.idempotency.finish(claim, answer).await,
        Settle::Release => state.idempotency.release(claim).await,
        Settle::Keep => {}
    }
}

/// What a keyed request that gets neither a claim nor an answer is told.
fn key_error(e: KeyError, timeout_ms: u64, request_id: Uuid) -> ApiError {
    match e {
        KeyError::Reused => ApiError::IdempotencyKeyReused,
        // The request under the key holds the id the client will see answered.
        KeyError::StillComputing { request_id } => ApiError::Timeout {
            timeout_ms,
            request_id,
        },
        KeyError::Unavailable(message) => ApiError::Unavailable {
            message,
            request_id,
        },
    }
}

/// The answer stored under the key, shaped as the first one was, marked as a replay.
fn replay(request_id: Uuid, task: Task, stored: StoredAnswer) -> Served {
    let (reply, latency_ms) = rules::replayed(stored);
    let answer = respond(Ok(reply), request_id, task, latency_ms);
    tracing::info!(request_id = %request_id, task = %task, "answer replayed for its Idempotency-Key");
    Served {
        result: answer.result,
        replayed: true,
    }
}

/// What the body of `POST /infer` is, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BodyKind {
    /// `application/json` or `application/*+json` (also when none is given).
    Json,
    /// `image/*`: a raw photo upload, its task in the query.
    Image,
}

/// Read the body within its kind's limit, then validate it: a JSON body
/// field by field (it names its own task and priority: its query, if any, is
/// checked as described, not read), a raw upload by its query (`?task=classify_image`, optionally
/// `&priority=`).
async fn read(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<InferRequest, ApiError> {
    let kind = body_kind(headers)?;
    let query = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::InvalidQuery(e.body_text()))?
        .0;
    let limits = &state.limits;
    let limit = match kind {
        BodyKind::Json => limits.max_body_bytes,
        BodyKind::Image => limits.max_image_bytes,
    };
    let bytes =
        axum::body::to_bytes(body, limit).await.map_err(|e| match e
            .into_inner()
            .downcast::<http_body_util::LengthLimitError>(
        ) {
            Ok(_) => ApiError::PayloadTooLarge(too_large(kind, limits)),
            Err(e) => ApiError::InvalidJson(format!("cannot read the request body: {e}")),
        })?;
    let upload_query = upload_query(&query)?;
    match kind {
        // The body names its own task, priority and model; the query was only checked.
        BodyKind::Json => validate::parse(&bytes, limits),
        BodyKind::Image => upload(upload_query, bytes.to_vec()),
    }
}

/// Why a body of `kind` over its limit was refused, naming the limit (and,
/// for JSON, where a larger photo goes).
fn too_large(kind: BodyKind, limits: &crate::config::Limits) -> String {
    match kind {
        BodyKind::Json => format!(
            "the request body is larger than {} bytes (MAX_BODY_BYTES); a larger photo goes as \
             a raw upload (`Content-Type: image/jpeg`, `POST /infer?task=classify_image`) of up \
             to {} bytes (MAX_IMAGE_BYTES)",
            limits.max_body_bytes, limits.max_image_bytes
        ),
        BodyKind::Image => format!(
            "the photo is larger than {} bytes (MAX_IMAGE_BYTES)",
            limits.max_image_bytes
        ),
    }
}

/// What a photo upload's query asks for: its queue and model.
#[derive(Debug, Default, PartialEq)]
struct UploadQuery {
    priority: Option<Priority>,
    model: Option<ModelName>,
}

/// The `priority` and `model` of `/infer`'s query, checked with its `task`:
/// each given at most once, `task` only `classify_image` (what a photo upload
/// is, also when omitted), `priority` a known name, `model` a valid model
/// name; anything else is 400 `invalid_query`.
fn upload_query(query: &[(String, String)]) -> Result<UploadQuery, ApiError> {
    let mut task = None;
    let mut priority = None;
    let mut model = None;
    for (name, value) in query {
        let slot = match name.as_str() {
            "task" => &mut task,
            "priority" => &mut priority,
            "model" => &mut model,
            other => {
                return Err(ApiError::InvalidQuery(format!(
                    "unknown query parameter `{other}`; /infer takes `task`, `priority` and `model` (for photo uploads)"
                )))
            }
        };
        if slot.replace(value.as_str()).is_some() {
            return Err(ApiError::InvalidQuery(format!(
                "query parameter `{name}` is given twice"
            )));
        }
    }
    if let Some(task) = task.filter(|t| *t != Task::ClassifyImage.as_str()) {
        return Err(ApiError::InvalidQuery(format!(
            "query parameter `task` is {task:?}; in the query it can only be `classify_image` \
             (a photo upload's task); a JSON body names its own task"
        )));
    }
    let invalid = |e: &dyn std::fmt::Display| ApiError::InvalidQuery(e.to_string());
    Ok(UploadQuery {
        priority: (priority.map(str::parse::<Priority>).transpose()).map_err(|e| invalid(&e))?,
        model: (model.map(str::parse::<ModelName>).transpose()).map_err(|e| invalid(&e))?,
    })
}

/// A raw photo upload: `classify_image` (the one task on photos), at the
/// priority and on the model its query names.
fn upload(query: UploadQuery, photo: Vec<u8>) -> Result<InferRequest, ApiError> {
    if photo.is_empty() {
        return Err(ApiError::InvalidImage("the uploaded photo is empty".into()));
    }
    Ok(InferRequest::ClassifyImage {
        input: Photo(photo),
        priority: query.priority,
        model: query.model,
    })
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => Ok(BodyKind::Json),
        Some(Ok(v)) if super::request::is_json(v) => Ok(BodyKind::Json),
        Some(Ok(v)) if super::request::is_image(v) => Ok(BodyKind::Image),
        Some(_) => Err(ApiError::UnsupportedMediaType),
    }
}

/// Where a request waits: its model's queue at its priority.
pub(super) struct Queue {
    pub(super) model: ModelName,
    pub(super) priority: Priority,
}

/// Register a waiter for `request_id`, then queue the request (with its
/// key's claim, if any). The waiter exists before the request can be
/// published, so no result can beat it; the guard forgets it when the handler
/// ends unanswered.
pub(super) async fn submit<'a>(
    state: &'a AppState,
    request_id: Uuid,
    input: TaskInput,
    queue: Queue,
    claim: Option<&Claim>,
) -> Result<(Waiting<'a>, oneshot::Receiver<Reply>), ApiError> {
    let answer = state.waiters.register(request_id);
    let waiting = Waiting {
        waiters: &state.waiters,
        id: request_id,
    };
    let queued = Queued {
        item: BatchItem {
            request_id,
            input,
            idempotency: claim.map(|c| c.tag.clone()),
            deferred: None,
        },
        model: queue.model,
        priority: queue.priority,
        deadline_ms: now_ms() + state.limits.request_timeout_ms,
        claim_revision: claim.map(|c| c.revision),
        stored: None,
    };
    state.batcher.submit(queued).await.map_err(refused)?;
    state.report.submitted();
    Ok((waiting, answer))
}

/// What the client hears when the batcher does not take its request.
pub(super) fn refused(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Stopped => ApiError::ShuttingDown,
        SubmitError::TooLarge { size, limit } => ApiError::MessageTooLarge { size, limit },
        SubmitError::TooCostly { .. } => ApiError::TooLarge(e.to_string()),
    }
}

/// The one reply before `deadline` (`timeout_ms` after the request came), or
/// why none will come.
pub(super) async fn await_reply(
    answer: oneshot::Receiver<Reply>,
    request_id: Uuid,
    timeout_ms: u64,
    deadline: tokio::time::Instant,
) -> Result<Reply, ApiError> {
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) => Err(ApiError::ShuttingDown),
        Err(_) => Err(ApiError::Timeout {
            timeout_ms,
            request_id,
        }),
    }
}

/// Turn the reply into the client's answer.
pub(super) fn respond(
    reply: Result<Reply, ApiError>,
    request_id: Uuid,
    task: Task,
    latency_ms: f64,
) -> Answer {
    let failed = |error| Answer {
        result: Err(error),
        worker_id: None,
        retries: 0,
    };
    match reply {
        Ok(Reply::Done {
            worker_id,
            model,
            attempt,
            outcome,
            ..
        }) => {
            let retries = attempt.saturating_sub(1);
            let result = match outcome {
                ItemOutcome::Ok(output) => Ok(InferResponse {
                    request_id,
                    task,
                    model,
                    worker_id: worker_id.clone(),
                    retries,
                    latency_ms,
                    output,
                    cached: false,
                }),
                ItemOutcome::Error(message) => Err(ApiError::Worker {
                    message,
                    request_id,
                }),
                ItemOutcome::TooLarge { size, limit } => Err(ApiError::ResultTooLarge {
                    message: format!(
                        "the answer takes {size} bytes; a result message carries at most {limit} \
                         (the NATS server's max_payload): ask for less, e.g. fewer candidates"
                    ),
                    request_id,
                }),
            };
            Answer {
                result,
                worker_id: Some(worker_id),
                retries,
            }
        }
        Ok(Reply::NotQueued(message)) => failed(ApiError::Unavailable {
            message,
            request_id,
        }),
        Ok(Reply::Abandoned {
            attempts,
            exhausted,
        }) => Answer {
            retries: attempts.saturating_sub(1),
            ..failed(ApiError::Abandoned {
                attempts,
                reason: if exhausted {
                    "every delivery failed (MAX_DELIVER reached)"
                } else {
                    "terminated by a worker: its deadline had passed"
                },
                request_id,
            })
        },
        Err(error) => failed(error),
    }
}
