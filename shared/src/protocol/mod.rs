//! Wire types: what travels on task and result subjects and in the heartbeat bucket.
//!
//! Task and result payloads are MessagePack with named fields
//! ([`encode`]/[`decode`]), so a field added later does not shift the others
//! and the nats CLI shows readable keys. Heartbeats, events and request
//! records are JSON so `nats kv get INFER_WORKERS <id>` is readable as it is.
//!
//! Every type is re-exported here, so callers write
//! `jetinfer_shared::protocol::X` whichever file `X` lives in.
//!
//! # Layout
//! - `task`: the vocabulary — [`Task`], [`Priority`], [`TaskInput`], [`TaskOutput`].
//! - `batch`: the hot-path messages — [`TaskBatch`] out, [`ResultBatch`] back.
//! - `limits`: the batch size a worker agrees to compute ([`TaskBatch::check_limits`]).
//! - `model`: [`ModelName`], the checked name of a model, and each task's default.
//! - `codec`: MessagePack [`encode`]/[`decode`] and their [`WireError`].
//! - `idempotency`: safe retries — the [`IdempotencyTag`] a keyed item carries,
//!   the [`IdempotencyEntry`] a key holds in its bucket, [`kv_key`], [`body_hash`].
//! - `deferred`: async requests — the [`DeferredTag`] an async item carries,
//!   the [`DeferredEntry`] its id holds in the results bucket.
//! - `records`: JSON observability records — [`Heartbeat`], [`WorkerEvent`],
//!   [`RequestRecord`], [`GatewayStats`].
//! - `preview`: one-line summaries of texts and outputs ([`preview()`]), and
//!   their private forms ([`Fingerprint`], [`TaskOutput::summary`]).

mod batch;
mod codec;
mod deferred;
mod idempotency;
mod limits;
mod model;
mod preview;
mod records;
mod task;

pub use crate::image::ImageCrop;
pub use batch::{BatchItem, ItemOutcome, ItemResult, ResultBatch, TaskBatch};
pub use codec::{decode, encode, WireError};
pub use deferred::{DeferredEntry, DeferredState, DeferredTag};
pub use idempotency::{
    answer_key, body_hash, kv_key, IdempotencyEntry, IdempotencyTag, KeyState, StoredAnswer,
};
pub use limits::{
    item_budget, LimitError, ENVELOPE_BYTES, MAX_BATCH_ITEMS, MAX_ITEM_TEXTS, MAX_TEXT_BYTES,
};
pub use model::{BadModelName, ModelName, ECHO_MODEL, IMAGE_MODEL, MAX_MODEL_NAME, TEXT_MODEL};
pub use preview::{preview, Fingerprint};
pub use records::{GatewayStats, Heartbeat, RequestRecord, ServedModel, WorkerEvent};
pub use task::{
    Modality, Priority, ScoredCandidate, ScoredClass, Task, TaskInput, TaskOutput, UnknownName,
    IMAGE_TOKENS,
};
