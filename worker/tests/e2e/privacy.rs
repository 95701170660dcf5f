//! Request content is private by default: a unique canary text sent through
//! every task (and in a refused request) appears in no log line of the gateway
//! or the workers (captured at debug level), no event on `infer.event.>`, no
//! `/recent_requests` record and no metric; nor does an answer's embedding.

use crate::stack::Stack;
use futures::StreamExt;
use jetinfer_testsupport::wait_for;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Everything logged in this test process at debug level, once the capture
/// is installed. Other tests' lines land here too; the canary is unique.
static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    let logs = LOGS.get_or_init(Mutex::default);
    let installed = INSTALLED.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_env_filter("jetinfer_gateway=debug,jetinfer_worker=debug,jetinfer_shared=debug")
            .with_writer(|| Capture)
            .with_ansi(false)
            .try_init()
            .is_ok()
    });
    assert!(
        *installed,
        "another global log subscriber was installed first"
    );
    logs
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.get_or_init(Mutex::default)
            .lock()
            .unwrap()
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_text_shows_up_in_no_log_event_record_or_metric() {
    let _ = captured_logs();
    let stack = Stack::start(1, &[]).await;
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut sub = stack
        .nats
        .client()
        .await
        .subscribe("infer.event.>")
        .await
        .unwrap();
    tokio::spawn({
        let events = events.clone();
        async move {
            while let Some(m) = sub.next().await {
                let text = String::from_utf8_lossy(&m.payload).into_owned();
                events
                    .lock()
                    .unwrap()
                    .push(format!("{}: {text}", m.subject));
            }
        }
    });

    let canary = format!("canary{}", uuid::Uuid::new_v4().simple());
    let bodies = [
        json!({"task": "embed", "input": format!("{canary} embed")}),
        json!({"task": "similarity", "input": {"query": format!("{canary} query"), "candidates": [format!("{canary} candidate")]}}),
        json!({"task": "classify", "input": format!("{canary} classify"), "labels": [format!("{canary} label"), "other"]}),
        json!({"task": "echo", "input": format!("{canary} echo")}),
    ];
    let mut vector_digits = String::new();
    for body in &bodies {
        let (status, answer) = stack.infer(body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        if let Some(x) = answer["output"]["embedding"][0].as_f64() {
            vector_digits = format!("{x}");
        }
    }
    // Refused, and its error message quotes the duplicate label to its client.
    let duplicate = json!({"task": "classify", "input": "x", "labels": [format!("{canary} dup"), format!("{canary} dup")]});
    let (status, answer) = stack.infer(duplicate).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        vector_digits.len() > 6,
        "an embedding came back: {vector_digits}"
    );

    wait_for("the four request events", Duration::from_secs(10), || {
        let n = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.contains(".request: "))
            .count();
        async move { (n >= 4).then_some(()) }
    })
    .await;
    let recent = stack.get_text("/recent_requests").await;
    let metrics = stack.get_text("/metrics").await;
    let events = events.lock().unwrap().join("\n");
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(
        recent.contains("input_hash"),
        "records carry a fingerprint: {recent}"
    );
    assert!(
        logs.contains("request answered"),
        "the capture saw the gateway's log"
    );
    for (what, text) in [
        ("the logs", &logs),
        ("the events", &events),
        ("/recent_requests", &recent),
        ("/metrics", &metrics),
    ] {
        assert!(!text.contains(&canary), "request text in {what}");
        assert!(
            !text.contains(&vector_digits),
            "an embedding value in {what}"
        );
    }
    stack.shutdown().await;
}
