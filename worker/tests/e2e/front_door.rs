//! The gateway's front door: API keys, shedding load (429 and 503 with
//! `Retry-After`) and recovering, Prometheus metrics on gateway and workers,
//! and workers visible as a NATS micro service.
//!
//! - [`admission`]: who and how much gets in: API keys, the in-flight limit,
//!   a full work queue.
//! - [`observability`]: what the stack shows about itself: Prometheus metrics
//!   (merged forward passes included) and NATS micro service discovery.

mod admission;
mod observability;

use std::time::Duration;

/// Whole-test bound.
const LIMIT: Duration = Duration::from_secs(240);
/// Bound on each wait for a state within a test.
const WAIT: Duration = Duration::from_secs(60);

/// GET `url` with exactly the key given; returns status and body text.
async fn get(url: &str, key: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.expect("reachable");
    (r.status().as_u16(), r.text().await.unwrap())
}
