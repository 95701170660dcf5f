//! `--nats-cluster 3`: three nats-servers routed into one cluster, every
//! stream and bucket kept in three copies, and a stack that serves on it.

use crate::harness::Launcher;
use crate::supervision::serves;
use jetinfer_testsupport::three_current_copies;
use std::time::Duration;

#[tokio::test]
async fn a_cluster_of_three_keeps_three_copies_of_the_queue_and_serves() {
    let mut stack = Launcher::start_cluster(3, 1);
    stack.wait_up().await;
    assert_eq!(
        stack.child_pids("nats-server").len(),
        3,
        "three nats-servers:\n{}",
        stack.output()
    );
    serves(
        &stack,
        "an answer from the cluster",
        Duration::from_secs(60),
    )
    .await;
    let js = async_nats::jetstream::new(stack.admin().await.expect("admin login"));
    for stream in ["INFER_TASKS", "INFER_RESULTS", "KV_INFER_WORKERS"] {
        three_current_copies(&js, stream).await;
    }
    assert!(
        stack
            .output()
            .contains("a cluster of 3: streams and buckets keep 3 copies"),
        "{}",
        stack.output()
    );
}
