//! Every bad input gets its documented 4xx with a JSON error; nothing hangs.

use crate::stack::{Stack, WORKER};
use jetinfer_testsupport::WorkerProcess;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_inputs_get_their_documented_status_and_code() {
    let stack = Stack::start(
        1,
        &[
            "--max-body-bytes",
            "4096",
            "--max-input-chars",
            "100",
            "--max-request-tokens",
            "100",
        ],
    )
    .await;
    let json_ct = "application/json";
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (b"{not json".to_vec(), json_ct, 400, "invalid_json"),
        (b"[1,2]".to_vec(), json_ct, 400, "invalid_json"),
        (
            b"task=embed".to_vec(),
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (vec![b' '; 5000], json_ct, 413, "payload_too_large"),
        (
            json!({"task": "translate", "input": "x"})
                .to_string()
                .into(),
            json_ct,
            422,
            "unknown_task",
        ),
        (
            json!({"input": "x"}).to_string().into(),
            json_ct,
            422,
            "missing_field",
        ),
        (
            json!({"task": "embed"}).to_string().into(),
            json_ct,
            422,
            "missing_field",
        ),
        (
            json!({"task": "embed", "input": ""}).to_string().into(),
            json_ct,
            422,
            "invalid_input",
        ),
        (
            json!({"task": "embed", "input": ["a"]}).to_string().into(),
            json_ct,
            422,
            "invalid_input",
        ),
        (
            json!({"task": "embed", "input": "x".repeat(101)})
                .to_string()
                .into(),
            json_ct,
            422,
            "input_too_large",
        ),
        (
            // 8 texts of ~27 estimated tokens each: over the budget of 100.
            json!({"task": "similarity", "input": {"query": "q".repeat(99), "candidates": vec!["c".repeat(99); 7]}})
                .to_string()
                .into(),
            json_ct,
            422,
            "input_too_large",
        ),
        (
            json!({"task": "similarity", "input": "x"})
                .to_string()
                .into(),
            json_ct,
            422,
            "invalid_input",
        ),
        (
            json!({"task": "similarity", "input": {"query": "q"}})
                .to_string()
                .into(),
            json_ct,
            422,
            "missing_field",
        ),
        (
            json!({"task": "classify", "input": "x", "labels": "positive"})
                .to_string()
                .into(),
            json_ct,
            422,
            "invalid_input",
        ),
        (
            json!({"task": "embed", "input": "x", "extra": 1})
                .to_string()
                .into(),
            json_ct,
            422,
            "unknown_field",
        ),
    ];
    for (body, content_type, want_status, want_code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (status, answer) = stack.infer_raw(body, content_type).await;
        assert_eq!(status, want_status, "{shown}: {answer}");
        assert_eq!(answer["error"], want_code, "{shown}: {answer}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    // The stack still serves after all that.
    let (status, _) = stack
        .infer(json!({"task": "embed", "input": "still alive"}))
        .await;
    assert_eq!(status, 200);
    let status = stack.status().await.unwrap();
    assert_eq!(status["gateway"]["rejected"], 14);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_worker_means_a_504_with_the_request_id_not_a_hang() {
    let stack = Stack::start(0, &["--request-timeout-ms", "300"]).await;
    let (status, body) = stack
        .infer(json!({"task": "embed", "input": "anyone there?"}))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "timeout");
    assert!(body["request_id"].is_string());
    let status = stack.status().await.unwrap();
    assert_eq!(status["gateway"]["timed_out"], 1);
    assert_eq!(
        status["gateway"]["client_gone"], 0,
        "the client waited to the end"
    );
    assert_eq!(status["waiting"], 0, "a timed-out request frees its slot");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_disconnects_frees_its_slot_and_its_late_result_is_no_duplicate() {
    let stack = Stack::start(0, &["--request-timeout-ms", "60000"]).await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/infer", stack.url))
        .json(&json!({"task": "embed", "input": "nobody will read this"}))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up first");
    jetinfer_testsupport::wait_for(
        "the abandoned request to free its slot",
        std::time::Duration::from_secs(10),
        || async {
            let status = stack.status().await?;
            let gateway = &status["gateway"];
            (status["waiting"] == 0 && gateway["submitted"] == 1 && gateway["client_gone"] == 1)
                .then_some(())
        },
    )
    .await;
    // A worker comes and computes the abandoned request: its result is late.
    let _worker = WorkerProcess::start(WORKER, &stack.nats, "late", &[]);
    stack.wait_for_workers(1).await;
    jetinfer_testsupport::wait_for(
        "the worker to compute the abandoned request",
        std::time::Duration::from_secs(30),
        || async { (stack.status().await?["workers"][0]["processed"] == 1).then_some(()) },
    )
    .await;
    // Results come in order: once a later request is answered, the late one was routed.
    let (status, body) = stack.infer(json!({"task": "echo", "input": "after"})).await;
    assert_eq!(status, 200, "{body}");
    let status = stack.status().await.unwrap();
    assert_eq!(
        status["gateway"]["duplicates_dropped"], 0,
        "a late result is no duplicate"
    );
    assert_eq!(status["gateway"]["client_gone"], 1);
    assert_eq!(status["gateway"]["timed_out"], 0);
    stack.shutdown().await;
}
