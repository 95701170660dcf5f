//! Hostile clients are shed, not served forever: connections that never finish
//! their request head are closed within `HEADER_TIMEOUT_S`, those over
//! `MAX_CONNECTIONS` are refused at once, and a normal client is still served.

use crate::stack::Stack;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_CONNECTIONS: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_sent_heads_are_shed_and_a_normal_client_is_served() {
    let stack = Stack::start(1, &["--max-connections", "64", "--header-timeout-s", "2"]).await;
    let addr = stack.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..2 * MAX_CONNECTIONS {
        let mut conn = TcpStream::connect(&addr).await.expect("connect");
        conn.write_all(b"POST /infer HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("half a head");
        idle.push(conn);
    }
    let opened = Instant::now();

    // While they hold every slot: an answer, 200 or a fast 503, never a hang.
    let during = tokio::time::timeout(
        Duration::from_secs(20),
        stack
            .http
            .post(format!("{}/infer", stack.url))
            .json(&json!({"task":"embed","input":"hi"}))
            .send(),
    )
    .await
    .expect("/infer hung behind half-sent heads");
    if let Ok(response) = during {
        let status = response.status().as_u16();
        assert!(status == 200 || status == 503, "status {status}");
    }

    // Every half-sent head is closed by the server within three timeouts.
    let mut closed = 0;
    for conn in &mut idle {
        let left = (HEADER_TIMEOUT * 3).saturating_sub(opened.elapsed());
        let mut rest = Vec::new();
        if tokio::time::timeout(left, conn.read_to_end(&mut rest))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        idle.len(),
        "half-sent heads still open after {:?}",
        opened.elapsed()
    );

    let (status, body) = tokio::time::timeout(
        Duration::from_secs(20),
        stack.infer(json!({"task":"embed","input":"hi"})),
    )
    .await
    .expect("/infer hung after the flood");
    assert_eq!(status, 200, "{body}");
    stack.shutdown().await;
}
