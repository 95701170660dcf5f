//! The server and the messages: nats-server killed and restarted mid-load,
//! a batch that waited past its deadline, and hostile messages published
//! straight onto a task subject.

use super::{assert_answered_once, report, worker_field, LIMIT};
use crate::stack::Stack;
use crate::stack::WORKER;
use futures::StreamExt;
use jetinfer_shared::protocol::{self, BatchItem, ModelName, Priority, Task, TaskBatch, TaskInput};
use jetinfer_shared::{dead, subjects};
use jetinfer_testsupport::{wait_for, WorkerProcess};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_restart_mid_load_gives_every_request_one_answer() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(
            3,
            &["--request-timeout-ms", "20000", "--batch-max-size", "4"],
        )
        .await;
        let load = async {
            let mut all = Vec::new();
            for wave in 0..10 {
                let calls = (0..20).map(|i| {
                    stack.infer(
                        json!({"task": "embed", "input": format!("wave {wave} request {i}")}),
                    )
                });
                all.extend(futures::future::join_all(calls).await);
            }
            all
        };
        let chaos = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stack.nats.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            stack.nats.restart();
        };
        let (answers, ()) = tokio::join!(load, chaos);
        report("nats restart", &answers);
        assert_eq!(answers.len(), 200);
        for (status, body) in &answers {
            match status {
                200 => assert!(body["output"]["embedding"].is_array(), "{body}"),
                503 | 504 => assert!(
                    body["error"].is_string() && body["request_id"].is_string(),
                    "{body}"
                ),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_answered_once(&answers);
        // Without restarting anything, the stack serves again.
        wait_for(
            "a new request to succeed after the restart",
            Duration::from_secs(60),
            || async {
                let (status, _) = stack
                    .infer(json!({"task": "embed", "input": "after the storm"}))
                    .await;
                (status == 200).then_some(())
            },
        )
        .await;
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_whose_deadline_passed_is_not_computed() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &["--request-timeout-ms", "300"]).await;
        let client = stack.nats.client().await;
        let mut expired = client.subscribe("infer.event.*.expired").await.unwrap();
        let (status, body) = stack
            .infer(json!({"task": "embed", "input": "too late"}))
            .await;
        assert_eq!(status, 504, "{body}");

        let _late = WorkerProcess::start(WORKER, &stack.nats, "late", &[]);
        let event = tokio::time::timeout(Duration::from_secs(60), expired.next())
            .await
            .expect("an expired event")
            .unwrap();
        let event: Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(event["worker_id"], "late");
        assert_eq!(event["requests"], 1);
        wait_for(
            "the late worker's heartbeat",
            Duration::from_secs(30),
            || async { worker_field(&stack, "late", "processed").await },
        )
        .await;
        assert_eq!(
            worker_field(&stack, "late", "processed").await,
            Some(0),
            "nothing was computed"
        );
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_messages_on_task_subjects_are_terminated_and_reported() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(1, &[]).await;
        let client = stack.nats.client().await;
        let mut failed = client.subscribe("infer.event.*.failed").await.unwrap();
        let js = async_nats::jetstream::new(client.clone());

        let batch = |items: Vec<BatchItem>| TaskBatch {
            batch_id: uuid::Uuid::new_v4(),
            model: ModelName::default_for(Task::Embed),
            task: Task::Embed,
            priority: Priority::Normal,
            reply_subject: "infer.result.nobody".into(),
            deadline_ms: u64::MAX,
            items,
        };
        let embed = |text: String| BatchItem {
            request_id: uuid::Uuid::new_v4(),
            input: TaskInput::Embed { text },
            idempotency: None,
            deferred: None,
        };
        let valid = protocol::encode(&batch(vec![embed("fine".into())])).unwrap();
        // Seeded noise, so a failure reproduces.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let hostile: Vec<(&str, Vec<u8>)> = vec![
            ("not msgpack", b"\x00\xffnot msgpack".to_vec()),
            ("empty", Vec::new()),
            ("random bytes", noise),
            ("truncated batch", valid[..valid.len() / 2].to_vec()),
            (
                "wrong shape",
                protocol::encode(&json!({"task": 7, "items": "none"})).unwrap(),
            ),
            (
                "5000 requests",
                protocol::encode(&batch((0..5000).map(|i| embed(format!("t{i}"))).collect()))
                    .unwrap(),
            ),
            (
                "4 MiB text",
                protocol::encode(&batch(vec![embed("a".repeat(4 << 20))])).unwrap(),
            ),
            (
                "wrong task in batch",
                protocol::encode(&TaskBatch {
                    task: Task::Classify,
                    ..batch(vec![embed("x".into())])
                })
                .unwrap(),
            ),
        ];
        for (what, payload) in &hostile {
            js.publish(
                "infer.task.all-minilm-l6-v2.embed.normal",
                payload.clone().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap_or_else(|e| panic!("{what}: stored in the task stream: {e}"));
        }
        // Over the server's max_payload: refused at the door, never stored.
        // The server answers it by closing the publisher's connection, so it
        // goes out on a connection of its own: `failed` events published
        // while `client` reconnected would never reach its subscription.
        let huge = bytes::Bytes::from(vec![0u8; 9 << 20]);
        let doomed = async_nats::jetstream::new(stack.nats.client().await);
        let refused = async {
            doomed
                .publish("infer.task.all-minilm-l6-v2.embed.normal", huge)
                .await?
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        assert!(
            refused.await.is_err(),
            "a message over max_payload must be refused"
        );

        for (what, _) in &hostile {
            let event = tokio::time::timeout(Duration::from_secs(60), failed.next())
                .await
                .unwrap_or_else(|_| panic!("a failed event for {what}"))
                .unwrap();
            let event: Value = serde_json::from_slice(&event.payload).unwrap();
            assert!(
                event["error"].as_str().unwrap().contains("malformed"),
                "{what}: {event}"
            );
        }
        // Nothing left behind, and the worker kept serving.
        wait_for(
            "every hostile message removed",
            Duration::from_secs(30),
            || async {
                let mut stream = js.get_stream("INFER_TASKS").await.ok()?;
                (stream.info().await.ok()?.state.messages == 0).then_some(())
            },
        )
        .await;
        // Each was copied to the dead letters first, byte for byte, as malformed.
        let mut dead = js
            .get_stream(subjects::DEAD_STREAM)
            .await
            .expect("INFER_DEAD");
        assert_eq!(
            dead.info().await.unwrap().state.messages,
            hostile.len() as u64
        );
        for (seq, (what, payload)) in (1..).zip(&hostile) {
            let letter = dead.get_raw_message(seq).await.expect("a dead letter");
            let reason = letter.headers.get(dead::HEADER_REASON).map(|v| v.as_str());
            assert_eq!(reason, Some("malformed"), "{what}");
            assert!(
                letter.payload[..] == payload[..],
                "{what}: the message as it came"
            );
        }
        let (status, body) = stack
            .infer(json!({"task": "embed", "input": "still serving"}))
            .await;
        assert_eq!(status, 200, "{body}");
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
