//! The README's `nats` CLI commands, checked with a NATS client that is not
//! ours: `docs/nats_inspect.py` (nats-py) reads a live stack as the admin
//! does — the streams, the work stream and its consumers, a heartbeat as JSON, every
//! worker's `$SRV.INFO` and `$SRV.STATS`, a task batch's headers — and each
//! must say what the README says it shows.

use crate::stack::Stack;
use jetinfer_testsupport::client_python;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_the_readme_nats_commands_show_is_there() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(2, &[]).await;
        stack.wait_for_workers(2).await;
        let status = stack.get_json("/status").await;
        let worker = status["workers"][0]["id"].as_str().unwrap().to_owned();
        let (code, body) = stack
            .infer(json!({"task": "embed", "input": "counted"}))
            .await;
        assert_eq!(code, 200, "{body}");

        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/nats_inspect.py");
        let mut child = tokio::process::Command::new(client_python())
            .args([script, &worker])
            .envs(stack.nats.env("admin"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python runs");
        // It says when it listens for a task batch; then one is sent.
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = String::new();
        while let Some(line) = stderr.next_line().await.unwrap() {
            said += &line;
            said.push('\n');
            if line == "listening" {
                break;
            }
        }
        assert!(
            said.ends_with("listening\n"),
            "nats_inspect.py failed:\n{said}"
        );
        let (code, body) = stack
            .infer(json!({"task": "embed", "input": "inspected"}))
            .await;
        assert_eq!(code, 200, "{body}");
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "nats_inspect.py failed");
        let seen: Value = serde_json::from_slice(&out.stdout).expect("its JSON");

        // nats stream ls: the work queue, results, dead letters, buckets.
        let streams = seen["stream ls"].as_array().unwrap();
        for name in [
            "INFER_TASKS",
            "INFER_RESULTS",
            "INFER_DEAD",
            "KV_INFER_WORKERS",
            "KV_INFER_RESULTS_KV",
        ] {
            assert!(streams.contains(&json!(name)), "{name}: {streams:?}");
        }
        // nats stream info INFER_TASKS: the work queue, on file.
        let tasks = &seen["stream info INFER_TASKS"];
        assert_eq!(tasks["subjects"], json!(["infer.task.>"]), "{tasks}");
        assert_eq!(tasks["retention"], "workqueue", "{tasks}");
        assert_eq!(tasks["storage"], "file", "{tasks}");
        // nats consumer ls INFER_TASKS: work-<model>-<task>-<priority>.
        let consumers = seen["consumer ls INFER_TASKS"].as_array().unwrap();
        for name in [
            "work-all-minilm-l6-v2-embed-normal",
            "work-all-minilm-l6-v2-embed-high",
        ] {
            assert!(consumers.contains(&json!(name)), "{name}: {consumers:?}");
        }
        // nats kv get --raw INFER_WORKERS <worker>: the heartbeat, JSON.
        let beat = &seen[format!("kv get --raw INFER_WORKERS {worker}").as_str()];
        assert_eq!(beat["id"], worker.as_str(), "{beat}");
        assert_eq!(beat["state"], "ready", "{beat}");
        for field in ["processed", "failed", "redelivered", "in_flight"] {
            assert!(beat[field].is_u64(), "{field}: {beat}");
        }
        // nats micro info jetinfer-worker: every worker, with its counters.
        let micro = &seen["micro info jetinfer-worker"];
        let infos = micro["info"].as_array().unwrap();
        assert_eq!(infos.len(), 2, "{micro}");
        assert!(
            infos
                .iter()
                .any(|i| i["metadata"]["worker_id"] == worker.as_str()),
            "{micro}"
        );
        let stats = micro["stats"].as_array().unwrap();
        assert_eq!(stats.len(), 2, "{micro}");
        let processed: u64 = stats
            .iter()
            .map(|s| {
                s["endpoints"][0]["data"]["processed"]
                    .as_u64()
                    .expect("processed")
            })
            .sum();
        assert!(processed >= 1, "the answered request is counted: {micro}");
        // nats sub 'infer.task.>' --headers-only: a batch's headers say what it is.
        let batch = &seen["sub 'infer.task.>' --headers-only"];
        assert_eq!(
            batch["subject"], "infer.task.all-minilm-l6-v2.embed.normal",
            "{batch}"
        );
        let headers = &batch["headers"];
        assert_eq!(headers["Jetinfer-Task"], "embed", "{headers}");
        assert_eq!(headers["Jetinfer-Model"], "all-minilm-l6-v2", "{headers}");
        assert_eq!(headers["Jetinfer-Requests"], "1", "{headers}");
        assert_eq!(headers["Content-Type"], "application/msgpack", "{headers}");
        assert_eq!(
            headers["Nats-Msg-Id"], headers["Jetinfer-Batch-Id"],
            "{headers}"
        );
        assert!(headers["Jetinfer-Deadline-Ms"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok());
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
