//! Loopback unless asked otherwise; beyond loopback, keys or a refusal.

use crate::harness::{listeners, run_to_exit, Launcher};
use jetinfer_testsupport::wait_for;
use std::net::IpAddr;
use std::time::Duration;

/// Wait until `port` listens, then return the addresses it listens on.
async fn listening(what: &str, port: u16) -> Vec<IpAddr> {
    wait_for(
        &format!("{what} listening on port {port}"),
        Duration::from_secs(10),
        || {
            let found = listeners(port);
            std::future::ready((!found.is_empty()).then_some(found))
        },
    )
    .await
}

#[tokio::test]
async fn by_default_every_port_listens_on_loopback_only() {
    let mut stack = Launcher::start(1, &[], &[]);
    stack.wait_up().await;
    for (what, port) in stack.ports.named(1) {
        let at = listening(what, port).await;
        assert!(
            at.iter().all(|ip| ip.to_string() == "127.0.0.1"),
            "{what} (port {port}) listens on {at:?}, not only 127.0.0.1"
        );
    }
}

#[tokio::test]
async fn public_with_api_keys_listens_everywhere_and_both_fronts_need_the_key() {
    // The keys as a flag, so the children get them only from the launcher,
    // not by inheriting its environment.
    let mut stack = Launcher::start(0, &["--public", "--api-keys", "k-test"], &[]);
    stack.wait_up().await;
    for (what, port) in stack.ports.named(0) {
        let at = listening(what, port).await;
        // 0.0.0.0, or [::] where the program binds both families at once (nats-server).
        assert!(
            at.iter().all(IpAddr::is_unspecified),
            "{what} (port {port}) listens on {at:?}, not on every interface"
        );
    }
    let http = reqwest::Client::new();
    let fronts = [
        format!("{}/status", stack.gateway_url()),
        format!("http://127.0.0.1:{}/api/snapshot", stack.ports.dashboard),
    ];
    for url in fronts {
        let open = http.get(&url).send().await.expect("GET without a key");
        assert_eq!(open.status().as_u16(), 401, "{url} without the key");
        let keyed = http
            .get(&url)
            .bearer_auth("k-test")
            .send()
            .await
            .expect("GET with the key");
        assert_eq!(keyed.status().as_u16(), 200, "{url}: the key reached it");
    }
}

/// What a refused start must say: both ways out.
fn assert_refused(out: &std::process::Output, state: &std::path::Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused:\n{stderr}");
    assert!(
        stderr.contains("API_KEYS=") && stderr.contains("ALLOW_ANONYMOUS=true"),
        "the refusal names API_KEYS=… and ALLOW_ANONYMOUS=true:\n{stderr}"
    );
    assert!(
        !state.join("identities").exists(),
        "refused before doing anything"
    );
}

#[tokio::test]
async fn public_without_api_keys_refuses_to_start() {
    let (out, state) = run_to_exit(&["--public"], &[]).await;
    assert_refused(&out, state.path());
}

#[tokio::test]
async fn listen_host_0_0_0_0_without_api_keys_refuses_to_start() {
    let (out, state) = run_to_exit(&[], &[("LISTEN_HOST", "0.0.0.0")]).await;
    assert_refused(&out, state.path());
}

#[tokio::test]
async fn api_keys_or_allow_anonymous_let_a_public_stack_start() {
    for env in [("API_KEYS", "k-test"), ("ALLOW_ANONYMOUS", "true")] {
        let (out, state) = run_to_exit(&["--public"], &[env]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // It went on to start nats-server, which is missing on purpose.
        assert!(
            stderr.contains("cannot start /nonexistent/nats-server")
                && !stderr.contains("refusing"),
            "with {env:?} the launcher starts the stack:\n{stderr}"
        );
        assert!(
            state.path().join("identities/admin.env").exists(),
            "{env:?}: {stderr}"
        );
    }
}
