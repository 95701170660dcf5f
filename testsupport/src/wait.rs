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

/// Wait (at most a minute) until `stream` on a cluster is kept in three
/// copies: `num_replicas` 3, a leader, and both followers current. Returns
/// the leader's server name.
pub async fn three_current_copies(js: &async_nats::jetstream::Context, stream: &str) -> String {
    wait_for(
        &format!("{stream} with a leader and two current copies"),
        Duration::from_secs(60),
        || async {
            let info = js.get_stream(stream).await.ok()?.info().await.ok()?.clone();
            let cluster = info.cluster?;
            let current = cluster.replicas.len() == 2 && cluster.replicas.iter().all(|r| r.current);
            (info.config.num_replicas == 3 && current)
                .then_some(cluster.leader)
                .flatten()
        },
    )
    .await
}
