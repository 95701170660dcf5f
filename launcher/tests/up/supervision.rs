//! Every child of the launcher is restarted when it dies, and a crash loop
//! stops the stack with a message naming the child.

use crate::harness::{kill9, Launcher};
use jetinfer_testsupport::wait_for;
use std::time::Duration;

/// `POST /infer` embed "hi"; the status, or `None` when nothing answered.
async fn embed(url: &str) -> Option<u16> {
    let answer = reqwest::Client::new()
        .post(format!("{url}/infer"))
        .json(&serde_json::json!({"task": "embed", "input": "hi"}))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    Some(answer.status().as_u16())
}

/// Wait (at most `limit`) until the gateway answers an embed request with 200.
pub async fn serves(stack: &Launcher, what: &str, limit: Duration) {
    let url = stack.gateway_url();
    wait_for(what, limit, || async {
        (embed(&url).await == Some(200)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_killed_gateway_is_restarted_and_answers_again_within_10_s() {
    let mut stack = Launcher::start(1, &[], &[]);
    stack.wait_up().await;
    serves(&stack, "a first answer", Duration::from_secs(60)).await;
    let old = stack.child_pid("gateway").expect("the gateway runs");

    kill9(old);
    serves(
        &stack,
        "an answer after kill -9 of the gateway",
        Duration::from_secs(10),
    )
    .await;

    let new = stack.child_pid("gateway").expect("a gateway runs again");
    assert_ne!(new, old, "the answer came from a new gateway");
    let out = stack.output();
    assert!(
        out.contains("gateway exited (signal: 9") && out.contains("restarting it"),
        "the launcher says what it did:\n{out}"
    );
}

#[tokio::test]
async fn a_killed_nats_server_is_restarted_on_the_same_store() {
    let mut stack = Launcher::start(1, &[], &[]);
    stack.wait_up().await;
    let js = async_nats::jetstream::new(stack.admin().await.expect("admin login"));
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "PROBE".into(),
        subjects: vec!["probe".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create a probe stream");
    js.publish("probe", "kept".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let old = stack.child_pid("nats-server").expect("nats-server runs");

    kill9(old);
    wait_for(
        "nats-server back, with the message stored before the kill",
        Duration::from_secs(30),
        || async {
            let js = async_nats::jetstream::new(stack.admin().await?);
            let mut probe = js.get_stream("PROBE").await.ok()?;
            (probe.info().await.ok()?.state.messages == 1).then_some(())
        },
    )
    .await;

    let new = stack
        .child_pid("nats-server")
        .expect("nats-server runs again");
    assert_ne!(new, old, "a new nats-server");
    let out = stack.output();
    assert!(
        out.contains("nats-server exited (signal: 9") && out.contains("restarting it"),
        "the launcher says what it did:\n{out}"
    );
    serves(
        &stack,
        "an answer after the nats-server restart",
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test]
async fn a_crash_looping_gateway_stops_the_stack_naming_it() {
    // The gateway's port is taken, so every gateway exits at once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let listen = taken.local_addr().expect("its address").to_string();
    let mut stack = Launcher::start(
        0,
        &[
            "--gateway-listen",
            &listen,
            "--max-restarts",
            "2",
            "--restart-window-s",
            "600",
        ],
        &[],
    );

    let status = stack.wait_exit(Duration::from_secs(60)).await;

    let out = stack.output();
    assert!(
        !status.success(),
        "a crash loop is a failure ({status}):\n{out}"
    );
    assert_eq!(
        out.matches("gateway exited (exit status: 1); restarting it")
            .count(),
        2,
        "restarted twice:\n{out}"
    );
    assert!(
        out.contains("gateway exited (exit status: 1) and is not restarted again: a crash loop: 3 exits within 600 s"),
        "then given up on, saying why:\n{out}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", stack.ports.nats)).is_err(),
        "the rest of the stack was stopped:\n{out}"
    );
}
