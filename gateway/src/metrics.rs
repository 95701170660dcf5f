//! The gateway's Prometheus metrics (`jetinfer_gateway_*`, `jetinfer_queue_*`).
//!
//! Requests are counted by task and outcome (`ok` or the error code a client
//! saw), with a latency histogram; refusals before a task is known (bad
//! input, no key, overload) by code. Queue gauges are read from JetStream at
//! scrape time, so they are never staler than the scrape.

use crate::http::status::QueueStatus;
use jetinfer_shared::protocol::Task;

/// An accepted request got its answer (`outcome` = `ok` or an error code).
pub fn request_answered(task: Task, outcome: &'static str, seconds: f64, retries: u64) {
    let labels = [("task", task.as_str()), ("outcome", outcome)];
    metrics::counter!("jetinfer_gateway_requests_total", &labels).increment(1);
    metrics::histogram!("jetinfer_gateway_request_duration_seconds", &labels).record(seconds);
    if retries > 0 {
        metrics::counter!("jetinfer_gateway_retried_requests_total", "task" => task.as_str())
            .increment(1);
    }
}

/// A request was refused before it was queued (`code` as in the JSON error).
pub fn request_refused(code: &'static str) {
    metrics::counter!("jetinfer_gateway_refused_total", "code" => code).increment(1);
}

/// An accepted request's client hung up before its answer. Its own counter:
/// the task is not known where the waiter is dropped.
pub fn client_gone() {
    metrics::counter!("jetinfer_gateway_client_gone_total").increment(1);
}

/// A request with an `Idempotency-Key` was decided: `new` (claimed the key),
/// `replayed` (its answer was stored), `waited` (its earlier request was
/// still computing, and it got that answer), `reused` (another body: 422) or
/// `takeover` (the earlier request would never be answered, so it runs).
pub fn idempotent(outcome: &'static str) {
    metrics::counter!("jetinfer_gateway_idempotent_total", "outcome" => outcome).increment(1);
}

/// An async request was `accepted` (queued, 202), `cancelled` or
/// `forgotten` (`DELETE /result/{id}` before or after its answer).
pub fn async_request(outcome: &'static str) {
    metrics::counter!("jetinfer_gateway_async_total", "outcome" => outcome).increment(1);
}

/// A batch of `size` requests was published (or failed to be).
pub fn batch_published(task: Task, size: usize, stored: bool) {
    let outcome = if stored { "stored" } else { "refused" };
    metrics::histogram!("jetinfer_gateway_batch_size", "task" => task.as_str()).record(size as f64);
    metrics::counter!("jetinfer_gateway_batches_total", "task" => task.as_str(), "outcome" => outcome)
        .increment(1);
}

/// The answer cache was asked: `hit` (answered from it) or a miss.
pub fn cache(hit: bool) {
    let outcome = if hit { "hit" } else { "miss" };
    metrics::counter!("jetinfer_gateway_cache_total", "outcome" => outcome).increment(1);
}

/// A batch publish was sent again because its acknowledgement never came.
pub fn publish_retried() {
    metrics::counter!("jetinfer_gateway_publish_retries_total").increment(1);
}

/// Set the gauges read at scrape time; `admitted` is how many requests hold
/// a `MAX_IN_FLIGHT` slot.
pub fn observe(admitted: usize, queue: &QueueStatus) {
    metrics::gauge!("jetinfer_gateway_in_flight_requests").set(admitted as f64);
    metrics::gauge!("jetinfer_queue_pending_batches").set(queue.pending as f64);
    metrics::gauge!("jetinfer_queue_unacked_batches").set(queue.in_flight as f64);
    metrics::gauge!("jetinfer_queue_redelivered_batches").set(queue.redelivered as f64);
    metrics::gauge!("jetinfer_dead_letters").set(queue.dead_letters as f64);
    for c in &queue.consumers {
        metrics::gauge!("jetinfer_queue_pending_batches_by_consumer", "consumer" => c.name.clone())
            .set(c.pending as f64);
    }
}
