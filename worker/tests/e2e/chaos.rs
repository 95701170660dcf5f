//! Chaos: real worker processes killed, hung, losing results; nats-server
//! restarted; expired and malformed work. Every test is bounded in time and
//! checks that each accepted request got exactly one answer.
//!
//! The tests live in four files by what fails; the helpers they share are here.
//!
//! - [`workers`]: worker processes killed (`kill -9`), hung, losing results,
//!   failing every delivery, and leaving `/status` and `/readyz`.
//! - [`server`]: nats-server restarted mid-load, and what arrives on its task
//!   subjects: batches past their deadline, hostile messages.
//! - [`network`]: the gateway's connection cut again and again under load.
//! - [`cluster`]: a 3-node NATS cluster losing the node that leads the
//!   work queue mid-load, and gateways on different nodes.

mod cluster;
mod network;
mod server;
mod workers;

use crate::stack::Stack;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// Fast redelivery so faults resolve in seconds.
const FAST_RETRY: [(&str, &str); 2] = [("ACK_WAIT_MS", "1000"), ("BACKOFF_MS", "1000")];
/// Whole-test bound.
const LIMIT: Duration = Duration::from_secs(180);

/// [`FAST_RETRY`] plus `extra`, as a worker process's environment.
fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    FAST_RETRY
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// Send `n` embed requests at once; returns (status, body) for each.
async fn burst(stack: &Stack, n: usize) -> Vec<(u16, Value)> {
    let calls = (0..n)
        .map(|i| stack.infer(json!({"task": "embed", "input": format!("chaos request {i}")})));
    futures::future::join_all(calls).await
}

/// Every answer has a distinct request id: nobody was answered twice.
fn assert_answered_once(answers: &[(u16, Value)]) {
    let mut ids = HashSet::new();
    for (status, body) in answers {
        let id = body["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{status} without request id: {body}"));
        assert!(ids.insert(id.to_owned()), "request {id} answered twice");
    }
}

/// One line for the test log: sent, answered, succeeded, retried, failed.
fn report(name: &str, answers: &[(u16, Value)]) {
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    eprintln!(
        "{name}: sent {} answered {} succeeded {ok} retried {} failed {}",
        answers.len(),
        answers
            .iter()
            .filter(|(_, b)| b["request_id"].is_string())
            .count(),
        retried(answers),
        answers.len() - ok
    );
}

/// How many answers needed more than one delivery.
fn retried(answers: &[(u16, Value)]) -> usize {
    answers
        .iter()
        .filter(|(_, b)| b["retries"].as_u64().unwrap_or(0) >= 1)
        .count()
}

/// The number `field` of worker `id` in `/status`; None while it is not listed.
async fn worker_field(stack: &Stack, id: &str, field: &str) -> Option<u64> {
    let status = stack.status().await?;
    status["workers"]
        .as_array()?
        .iter()
        .find(|w| w["id"] == id)?[field]
        .as_u64()
}
