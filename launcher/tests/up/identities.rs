//! The secrets step as `./jetinfer up` runs it: one private identity file per
//! process, and `--tls` putting the whole stack on TLS.

use crate::harness::Launcher;
use jetinfer_testsupport::wait_for;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[tokio::test]
async fn up_with_tls_serves_over_tls_and_refuses_plain_clients() {
    let mut stack = Launcher::start(2, &["--tls"], &[]);
    stack.wait_up().await;
    let state = stack.state.path();

    // One identity per process, each readable by its owner only.
    for name in ["admin", "gateway", "dashboard", "worker-1", "worker-2"] {
        let file = state.join(format!("identities/{name}.env"));
        let mode = std::fs::metadata(&file)
            .expect("identity file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    let access = state.join("nats-server/access.conf");
    let conf = std::fs::read_to_string(&access).unwrap();
    assert!(conf.contains("tls {") && conf.contains("\"$KV.INFER_WORKERS.worker-2\""));

    // The pipeline works end to end, every hop to NATS over TLS.
    let url = format!("{}/infer", stack.gateway_url());
    let answer: serde_json::Value =
        wait_for("an embedding over TLS", Duration::from_secs(60), || async {
            let r = reqwest::Client::new()
                .post(&url)
                .json(&serde_json::json!({"task": "embed", "input": "over tls"}))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(r.json().await.ok()?)
        })
        .await;
    assert_eq!(
        answer["output"]["embedding"].as_array().map(Vec::len),
        Some(384)
    );
    assert!(stack.admin().await.is_some(), "TLS with the CA logs in");

    // A client that does not do TLS gets nothing, even with the right password.
    let admin =
        jetinfer_shared::identity::env_file::read(&state.join("identities/admin.env")).unwrap();
    let plain = async_nats::ConnectOptions::with_user_and_password(
        admin.name,
        admin.password.expose().to_owned(),
    )
    .connection_timeout(Duration::from_secs(3))
    .connect(format!("nats://127.0.0.1:{}", stack.ports.nats))
    .await;
    assert!(plain.is_err(), "a plain-text client must be refused");
}
