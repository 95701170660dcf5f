//! Worker faults: a worker process killed mid-batch, hung, losing results or
//! failing every delivery, and killed workers leaving `/status` and `/readyz`.

use super::{assert_answered_once, burst, env, report, retried, worker_field, LIMIT};
use crate::stack::Stack;
use crate::stack::WORKER;
use futures::StreamExt;
use jetinfer_shared::protocol::{self, TaskBatch, TaskInput};
use jetinfer_shared::{dead, subjects};
use jetinfer_testsupport::{wait_for, WorkerProcess};
use serde_json::json;
use std::time::Duration;

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

        // Killed the moment it starts a batch (then 800 ms from answering it):
        // its heartbeat's in-flight count can be a second stale, long enough
        // for the healthy workers to drain the burst and leave it idle.
        let mut started = stack
            .nats
            .client()
            .await
            .subscribe("infer.event.victim.started")
            .await
            .expect("subscribe to the victim's events");
        let killer = async {
            tokio::time::timeout(Duration::from_secs(60), started.next())
                .await
                .expect("the victim starts a batch");
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
        let hung = WorkerProcess::start(
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
        // An async request has no waiting client: the gateway stores the
        // same answer in the results bucket, for `GET /result/{id}`.
        let accepted: serde_json::Value = (stack.http)
            .post(format!("{}/infer/async", stack.url))
            .json(&json!({"task": "embed", "input": "doomed, async"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = format!("{}{}", stack.url, accepted["status_url"].as_str().unwrap());
        let (status, body) = wait_for(
            "the async request's answer",
            Duration::from_secs(60),
            || async {
                let r = stack.http.get(&url).send().await.ok()?;
                let status = r.status().as_u16();
                (status != 202).then_some((status, r.json::<serde_json::Value>().await.ok()?))
            },
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "retries_exhausted", "{body}");
        assert_eq!(body["request_id"], accepted["request_id"]);
        assert!(
            body["message"].as_str().unwrap().contains("2 attempt"),
            "{body}"
        );
        // Neither batch vanished: each was copied to the dead letters, once,
        // saying why, then removed from the work queue.
        let js = async_nats::jetstream::new(stack.nats.client().await);
        let letters = wait_for("two dead letters", Duration::from_secs(30), || async {
            let mut dead = js.get_stream(subjects::DEAD_STREAM).await.ok()?;
            let mut tasks = js.get_stream(subjects::TASK_STREAM).await.ok()?;
            let done = dead.info().await.ok()?.state.messages == 2
                && tasks.info().await.ok()?.state.messages == 0;
            done.then_some(dead)
        })
        .await;
        for seq in [1, 2] {
            let letter = letters.get_raw_message(seq).await.expect("a dead letter");
            let header = |name| letter.headers.get(name).map(|v| v.as_str().to_owned());
            assert_eq!(header(dead::HEADER_REASON).as_deref(), Some("exhausted"));
            assert_eq!(header(dead::HEADER_ATTEMPTS).as_deref(), Some("2"));
            // From the workers' events (the advisory names neither): the
            // hung worker reports its injected hang when its pass gives up.
            assert_eq!(header(dead::HEADER_LAST_WORKER).as_deref(), Some("hung"));
            assert_eq!(
                header(dead::HEADER_LAST_ERROR).as_deref(),
                Some("injected hang")
            );
            let batch: TaskBatch = protocol::decode(&letter.payload).expect("the batch as sent");
            let TaskInput::Embed { text } = &batch.items[0].input else {
                panic!("an embed batch: {batch:?}");
            };
            assert!(text.starts_with("doomed"), "{text}");
        }
        let status = stack.get_json("/status").await;
        assert_eq!(status["queue"]["dead_letters"], 2, "{status}");
        let metrics = stack.get_text("/metrics").await;
        assert!(metrics.contains("jetinfer_dead_letters 2"), "{metrics}");

        // An operator lists, reads and purges them; only the admin may.
        let dead = |login: &str, args: &[&str]| {
            let launcher = std::path::Path::new(WORKER).with_file_name("launcher");
            let out = std::process::Command::new(&launcher)
                .arg("dead")
                .args(args)
                .envs(stack.nats.env(login))
                .output()
                .unwrap_or_else(|e| panic!("{}: {e} (cargo build --bins)", launcher.display()));
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        };
        let (ok, listed) = dead("admin", &["ls"]);
        assert!(ok, "{listed}");
        assert_eq!(listed.matches("exhausted").count(), 2, "{listed}");
        assert!(listed.contains("embed"), "{listed}");
        let (ok, shown) = dead("admin", &["show", "1"]);
        assert!(
            ok && shown.contains("doomed") && shown.contains("Jetinfer-Attempts: 2"),
            "{shown}"
        );
        let (ok, refused) = dead("gateway", &["replay", "1"]);
        assert!(!ok, "a gateway may not replay: {refused}");

        // Replayed once a healthy worker exists, each is computed: its answer
        // lands in the results bucket under the original request id.
        drop(hung);
        let _healthy = WorkerProcess::start(WORKER, &stack.nats, "healthy", &env(&[]));
        let sync_id = letters_request(&letters, 1).await;
        let async_id = letters_request(&letters, 2).await;
        assert_eq!(
            async_id.to_string(),
            accepted["request_id"].as_str().unwrap()
        );
        let (ok, replayed) = dead("admin", &["replay", "2"]);
        assert!(
            ok && replayed.contains("replayed dead letter 2"),
            "{replayed}"
        );
        let answer = |id: uuid::Uuid| {
            let url = format!("{}/result/{id}", stack.url);
            let http = &stack.http;
            wait_for("the replayed answer", Duration::from_secs(60), move || {
                let url = url.clone();
                async move {
                    let r = http.get(&url).send().await.ok()?;
                    let body: serde_json::Value = r.json().await.ok()?;
                    body["output"]["embedding"].is_array().then_some(body)
                }
            })
        };
        let body = answer(async_id).await;
        assert_eq!(
            body["output"]["embedding"].as_array().unwrap().len(),
            384,
            "{body}"
        );
        assert_eq!(body["worker_id"], "healthy", "{body}");
        // Without a results bucket, the answers come back to the command.
        js.delete_key_value(subjects::RESULTS_BUCKET).await.unwrap();
        let (ok, replayed) = dead("admin", &["replay", "--all"]);
        assert!(ok, "{replayed}");
        assert!(replayed.contains("replayed dead letter 1"), "{replayed}");
        assert!(
            replayed.contains(&format!("{sync_id}  healthy attempt 1: ok: 384 floats")),
            "{replayed}"
        );
        let (ok, listed) = dead("admin", &["ls"]);
        assert!(ok && listed.contains("(no dead letters)"), "{listed}");

        // Garbage is no batch to replay: it stays, for the admin to purge.
        js.publish("infer.task.all-minilm-l6-v2.embed.normal", "garbage".into())
            .await
            .unwrap()
            .await
            .unwrap();
        wait_for("a malformed letter", Duration::from_secs(30), || async {
            let mut dead = js.get_stream(subjects::DEAD_STREAM).await.ok()?;
            (dead.info().await.ok()?.state.messages == 1).then_some(())
        })
        .await;
        let (ok, replayed) = dead("admin", &["replay", "--all"]);
        assert!(ok && replayed.contains("is not a task batch"), "{replayed}");
        let (ok, refused) = dead("gateway", &["purge"]);
        assert!(!ok, "a gateway may not purge: {refused}");
        let (ok, purged) = dead("admin", &["purge"]);
        assert!(ok && purged.contains("purged 1 dead letters"), "{purged}");
        let status = stack.get_json("/status").await;
        assert_eq!(status["queue"]["dead_letters"], 0, "{status}");
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

/// The (first) request id of dead letter `seq`.
async fn letters_request(letters: &async_nats::jetstream::stream::Stream, seq: u64) -> uuid::Uuid {
    let letter = letters.get_raw_message(seq).await.expect("a dead letter");
    let batch: TaskBatch = protocol::decode(&letter.payload).expect("a task batch");
    batch.items[0].request_id
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
