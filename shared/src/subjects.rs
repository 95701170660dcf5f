//! Every NATS name jetinfer uses, so no crate spells one by hand.
//!
//! The layout is the one in `docs/ARCHITECTURE.md`: tasks flow on
//! `infer.task.<model>.<task>.<priority>` into the work-queue stream, results come
//! back on `infer.result.<gateway-id>`, events go out on
//! `infer.event.<worker-id>.<kind>`.

use crate::protocol::{ModelName, Priority, Task};

/// Work-queue stream that holds task batches until a worker acks them.
pub const TASK_STREAM: &str = "INFER_TASKS";
/// Every subject the task stream captures.
pub const TASK_SUBJECTS: &str = "infer.task.>";
/// Short-lived stream that gives workers a publish-ack for results.
pub const RESULT_STREAM: &str = "INFER_RESULTS";
/// Every subject the result stream captures.
pub const RESULT_SUBJECTS: &str = "infer.result.>";
/// KV bucket of worker heartbeats, keyed by worker id.
pub const WORKERS_BUCKET: &str = "INFER_WORKERS";
/// The stream behind the heartbeat bucket (NATS names a bucket's stream `KV_<bucket>`).
pub const WORKERS_BUCKET_STREAM: &str = "KV_INFER_WORKERS";
/// What precedes a worker id in the subjects of the heartbeat bucket's stream.
pub const WORKERS_KEY_PREFIX: &str = "$KV.INFER_WORKERS.";
/// KV bucket of requests sent with an `Idempotency-Key`, keyed by
/// `protocol::kv_key`: the claim while one computes, then its answer. The
/// gateway creates it; workers only open it (their role cannot create it).
pub const IDEMPOTENCY_BUCKET: &str = "INFER_IDEMPOTENCY";
/// Prefix of the gateways' NATS API (the micro service `jetinfer-gateway`):
/// `infer.api.<task>`, request-reply, answered by any gateway (queue group).
pub const API_PREFIX: &str = "infer.api";

/// The NATS API subject of `task`: `infer.api.embed`, …
pub fn api_subject(task: Task) -> String {
    format!("{API_PREFIX}.{}", task.as_str())
}

/// KV bucket of async requests (`POST /infer/async`), keyed by request id:
/// queued, running, then the answer, for any gateway to serve. The gateway
/// creates it (TTL `ASYNC_RESULT_TTL_S`); workers only open it.
pub const RESULTS_BUCKET: &str = "INFER_RESULTS_KV";

/// Advisory JetStream publishes when a task batch reached its MaxDeliver.
pub const MAX_DELIVERIES_ADVISORY: &str =
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.INFER_TASKS.*";
/// Advisory JetStream publishes when a worker terminated a task batch.
pub const TERMINATED_ADVISORY: &str = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.INFER_TASKS.*";

/// Header carrying the batch id, for people reading messages with the nats CLI.
pub const HEADER_BATCH_ID: &str = "Jetinfer-Batch-Id";
/// Header carrying the task name.
pub const HEADER_TASK: &str = "Jetinfer-Task";
/// Header carrying the model a batch runs on.
pub const HEADER_MODEL: &str = "Jetinfer-Model";
/// Header carrying the number of requests in a batch.
pub const HEADER_REQUESTS: &str = "Jetinfer-Requests";
/// Header carrying the batch deadline in Unix milliseconds.
pub const HEADER_DEADLINE: &str = "Jetinfer-Deadline-Ms";
/// Header carrying the worker that produced a result.
pub const HEADER_WORKER: &str = "Jetinfer-Worker";
/// Content type of every task and result payload.
pub const MSGPACK: &str = "application/msgpack";

/// Headers every task and result message carries: content type, batch id and
/// request count, so `nats stream view` shows what a payload is without decoding it.
pub fn payload_headers(batch_id: &uuid::Uuid, requests: usize) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", MSGPACK);
    headers.insert(HEADER_BATCH_ID, batch_id.to_string().as_str());
    headers.insert(HEADER_REQUESTS, requests.to_string().as_str());
    headers
}

/// Subject a batch of `task` on `model` at `priority` is published on. The
/// model comes first, so `infer.task.<model>.>` is everything one model serves.
pub fn task_subject(model: &ModelName, task: Task, priority: Priority) -> String {
    format!("infer.task.{model}.{}.{}", task.as_str(), priority.as_str())
}

/// Durable pull consumer that every worker serving `task` with `model` at
/// `priority` shares.
///
/// Sharing one consumer is what makes dispatch load-aware: an idle worker
/// pulls the next batch, a busy one simply does not ask. One consumer per
/// model is what routes by capability: a worker only pulls from the
/// consumers of the models it serves.
pub fn work_consumer(model: &ModelName, task: Task, priority: Priority) -> String {
    format!(
        "{WORK_CONSUMER_PREFIX}{model}-{}-{}",
        task.as_str(),
        priority.as_str()
    )
}

/// What every work consumer's name starts with.
pub const WORK_CONSUMER_PREFIX: &str = "work-";

/// Subject on which one gateway receives the results of the batches it sent.
pub fn result_subject(gateway_id: &str) -> String {
    format!("infer.result.{gateway_id}")
}

/// Subject on which one gateway hears the results of its batches straight
/// from the worker, over core NATS: an fsync sooner than the stored copy on
/// [`result_subject`], which stays the one that cannot be lost.
pub fn direct_subject(gateway_id: &str) -> String {
    format!("infer.direct.{gateway_id}")
}

/// The direct subject beside result subject `reply` (`infer.result.<id>` →
/// `infer.direct.<id>`); `None` for any other subject.
pub fn direct_of(reply: &str) -> Option<String> {
    reply.strip_prefix("infer.result.").map(direct_subject)
}

/// Stream of dead letters: batches that left the work queue unanswered.
pub const DEAD_STREAM: &str = "INFER_DEAD";
/// Subjects captured by [`DEAD_STREAM`].
pub const DEAD_SUBJECTS: &str = "infer.dead.>";

/// Subject of a dead letter that died for `reason` (`exhausted`, `malformed`, `expired`).
pub fn dead_subject(reason: &str) -> String {
    format!("infer.dead.{reason}")
}

/// Every event subject (workers and gateways), for watchers like the dashboard.
pub const EVENT_SUBJECTS: &str = "infer.event.>";

/// Subject of an event from a worker (`started`, `completed`, `failed`, ...)
/// or a gateway (`request`, `stats`); `source` is the worker or gateway id.
pub fn event_subject(source: &str, kind: &str) -> String {
    format!("infer.event.{source}.{kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design() {
        let text = ModelName::default_for(Task::Embed);
        assert_eq!(
            task_subject(&text, Task::Embed, Priority::Normal),
            "infer.task.all-minilm-l6-v2.embed.normal"
        );
        assert_eq!(
            work_consumer(&text, Task::Similarity, Priority::High),
            "work-all-minilm-l6-v2-similarity-high"
        );
        assert_eq!(result_subject("gw1"), "infer.result.gw1");
        assert_eq!(event_subject("w1", "started"), "infer.event.w1.started");
    }
}
