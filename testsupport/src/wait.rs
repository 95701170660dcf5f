//! Bounded waiting on state.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll `check` until it returns `Some`, at most `limit`; panic naming `what` otherwise.
/// Waiting on state, not on a fixed sleep, keeps tests fast and deterministic.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
