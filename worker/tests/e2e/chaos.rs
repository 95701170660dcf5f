//! Chaos: real worker processes killed, hung, losing results; nats-server
//! restarted; expired and malformed work. Every test is bounded in time and
//! checks that each accepted request got exactly one answer.

use crate::stack::Stack;
use crate::stack::WORKER;
use futures::StreamExt;
use jetinfer_shared::protocol::{self, BatchItem, Priority, Task, TaskBatch, TaskInput};
use jetinfer_testsupport::{wait_for, WorkerProcess};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// Fast redelivery so faults resolve in seconds.
const FAST_RETRY: [(&str, &str); 2] = [("ACK_WAIT_MS", "1000"), ("BACKOFF_MS", "1000")];
/// Whole-test bound.
const LIMIT: Duration = Duration::from_secs(180);

fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    FAST_RETRY
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// Send `n` embed requests at once; returns (status, body) for each.
async fn burst(stack: &Stack, n: usize) -> Vec<(u16, Value)> {
    let calls = (0..n)
        .map(|i| stack.infer(json!({"task": "embed", "input": format!("chaos request {i}")})));
    futures::future::join_all(calls).await
}

/// Every answer has a distinct request id: nobody was answered twice.
fn assert_answered_once(answers: &[(u16, Value)]) {
    let mut ids = HashSet::new();
    for (status, body) in answers {
        let id = body["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{status} without request id: {body}"));
        assert!(ids.insert(id.to_owned()), "request {id} answered twice");
    }
}

/// One line for the test log: sent, answered, succeeded, retried, failed.
fn report(name: &str, answers: &[(u16, Value)]) {
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    eprintln!(
        "{name}: sent {} answered {} succeeded {ok} retried {} failed {}",
        answers.len(),
        answers
            .iter()
            .filter(|(_, b)| b["request_id"].is_string())
            .count(),
        retried(answers),
        answers.len() - ok
    );
}

fn retried(answers: &[(u16, Value)]) -> usize {
    answers
        .iter()
        .filter(|(_, b)| b["retries"].as_u64().unwrap_or(0) >= 1)
        .count()
}

async fn worker_field(stack: &Stack, id: &str, field: &str) -> Option<u64> {
    let status = stack.status().await?;
    status["workers"]
        .as_array()?
        .iter()
        .find(|w| w["id"] == id)?[field]
        .as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_batch_loses_no_request() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(
            0,
            &["--batch-max-size", "8", "--request-timeout-ms", "90000"],
        )
        .await;
        // The victim is slow, so it is almost always in the middle of a batch.
        let mut victim = WorkerProcess::start(
            WORKER,
            &stack.nats,
            "victim",
            &env(&[("DELAY_MIN_MS", "800"), ("DELAY_MAX_MS", "800")]),
        );
        let _a = WorkerProcess::start(WORKER, &stack.nats, "healthy-a", &env(&[]));
        let _b = WorkerProcess::start(WORKER, &stack.nats, "healthy-b", &env(&[]));
        stack.wait_for_workers(3).await;

        let killer = async {
            wait_for("victim busy", Duration::from_secs(60), || async {
                (worker_field(&stack, "victim", "in_flight").await? >= 1).then_some(())
            })
            .await;
            victim.kill();
        };
        let (answers, ()) = tokio::join!(burst(&stack, 500), killer);
        report("kill -9", &answers);
        assert_eq!(answers.len(), 500);
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
        }
        assert_answered_once(&answers);
        assert!(
            retried(&answers) >= 1,
            "the killed worker's batch was redelivered"
        );
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_worker_has_its_batches_redelivered_elsewhere() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &["--batch-max-size", "4"]).await;
        let _hung = WorkerProcess::start(WORKER, &stack.nats, "hung", &env(&[("HANG_RATE", "1")]));
        let _a = WorkerProcess::start(WORKER, &stack.nats, "healthy-a", &env(&[]));
        let _b = WorkerProcess::start(WORKER, &stack.nats, "healthy-b", &env(&[]));
        stack.wait_for_workers(3).await;

        let answers = burst(&stack, 120).await;
        report("hang", &answers);
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
            assert_ne!(body["worker_id"], "hung", "a hung worker never answers");
        }
        assert_answered_once(&answers);
        assert!(retried(&answers) >= 1, "hung batches were redelivered");
        wait_for(
            "healthy workers to report redeliveries",
            Duration::from_secs(10),
            || async {
                let a = worker_field(&stack, "healthy-a", "redelivered").await?;
                let b = worker_field(&stack, "healthy-b", "redelivered").await?;
                (a + b >= 1).then_some(())
            },
        )
        .await;
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_results_are_redelivered_until_answered() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &["--batch-max-size", "2"]).await;
        // One fault decision per batch (no merging), so 100 batches see ~20 drops.
        let faulty = env(&[
            ("DROP_RATE", "0.2"),
            ("MAX_DELIVER", "10"),
            ("MAX_BATCH_TOKENS", "0"),
        ]);
        let _w: Vec<WorkerProcess> = (0..3)
            .map(|i| WorkerProcess::start(WORKER, &stack.nats, &format!("lossy-{i}"), &faulty))
            .collect();
        stack.wait_for_workers(3).await;

        let answers = burst(&stack, 200).await;
        report("drop 0.2", &answers);
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
        }
        assert_answered_once(&answers);
        assert!(retried(&answers) >= 1, "dropped results show as retries");
        let status = stack.status().await.unwrap();
        assert!(
            status["gateway"]["retried"].as_u64().unwrap() >= 1,
            "{status}"
        );
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_retries_answer_at_once_with_the_attempts() {
    tokio::time::timeout(LIMIT, async {
        // The request timeout is far away: only the advisory can explain a quick error.
        let stack = Stack::start(0, &["--request-timeout-ms", "120000"]).await;
        let _hung = WorkerProcess::start(
            WORKER,
            &stack.nats,
            "hung",
            &[
                ("ACK_WAIT_MS", "500"),
                ("BACKOFF_MS", "500"),
                ("MAX_DELIVER", "2"),
                ("HANG_RATE", "1"),
            ],
        );
        stack.wait_for_workers(1).await;
        let (status, body) = stack
            .infer(json!({"task": "embed", "input": "doomed"}))
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "retries_exhausted", "{body}");
        assert!(body["request_id"].is_string());
        assert!(
            body["message"].as_str().unwrap().contains("2 attempt"),
            "{body}"
        );
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

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
            task: Task::Embed,
            priority: Priority::Normal,
            reply_subject: "infer.result.nobody".into(),
            deadline_ms: u64::MAX,
            items,
        };
        let embed = |text: String| BatchItem {
            request_id: uuid::Uuid::new_v4(),
            input: TaskInput::Embed { text },
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
            js.publish("infer.task.embed.normal", payload.clone().into())
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
                .publish("infer.task.embed.normal", huge)
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
        let (status, body) = stack
            .infer(json!({"task": "embed", "input": "still serving"}))
            .await;
        assert_eq!(status, 200, "{body}");
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_leaves_status_and_readiness_follows() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &[]).await;
        let ready = || async {
            let r = stack
                .http
                .get(format!("{}/readyz", stack.url))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        };
        assert_eq!(ready().await, 503, "no worker yet");
        let mut a = WorkerProcess::start(WORKER, &stack.nats, "a", &[]);
        let mut b = WorkerProcess::start(WORKER, &stack.nats, "b", &[]);
        stack.wait_for_workers(2).await;
        assert_eq!(ready().await, 200);
        a.kill();
        // Heartbeat TTL is three 1 s intervals.
        stack.wait_for_workers(1).await;
        assert_eq!(ready().await, 200);
        b.kill();
        stack.wait_for_workers(0).await;
        assert_eq!(ready().await, 503);
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
