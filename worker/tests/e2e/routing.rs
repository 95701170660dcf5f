//! Capability routing with real workers: requests reach only workers that
//! serve their model, a `MODEL_ROUTES` split sends traffic to both models of
//! a canary (and none to a canary whose worker died), and a request no live
//! worker can compute is a 503 `no_worker` naming the model, at once.

use crate::stack::{Stack, WORKER};
use jetinfer_testsupport::{wait_for, WorkerProcess};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(180);

/// Models and workers that answered, as `model@worker`.
fn served_by(answers: &[(u16, Value)]) -> BTreeSet<String> {
    answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            format!(
                "{}@{}",
                body["model"].as_str().unwrap(),
                body["worker_id"].as_str().unwrap()
            )
        })
        .collect()
}

async fn embeds(stack: &Stack, n: usize, extra: Value) -> Vec<(u16, Value)> {
    let sends = (0..n).map(|i| {
        let mut body = json!({"task": "embed", "input": format!("routed sentence {i}")});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        stack.infer(body)
    });
    futures::future::join_all(sends).await
}

fn assert_no_worker(status: u16, body: &Value, model: &str) {
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("no_worker")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("no live worker serves model {model} ")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_reach_only_workers_with_their_model_and_a_canary_split_follows_the_live_ones() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(
            0,
            &[
                // Requests queued for the killed canary end soon.
                "--request-timeout-ms",
                "5000",
                "--no-worker-grace-ms",
                "0",
                "--model-routes",
                "embed:all-minilm-l6-v2=1,canary=1",
            ],
        )
        .await;
        // Two text workers on the same weights under two names: `canary`
        // takes its name from MODEL_ID, as a second model would.
        let _main = WorkerProcess::start(
            WORKER,
            &stack.nats,
            "main",
            &[("MODELS", "all-minilm-l6-v2")],
        );
        let mut canary = WorkerProcess::start(
            WORKER,
            &stack.nats,
            "canary",
            &[("MODEL_ID", "test/canary"), ("MODELS", "canary")],
        );
        stack.wait_for_workers(2).await;
        // Once the gateway's poll has seen the canary, naming it works.
        wait_for(
            "the gateway to route to the canary",
            Duration::from_secs(30),
            || async {
                let (status, _) = stack
                    .infer(json!({"task": "embed", "input": "x", "model": "canary"}))
                    .await;
                (status == 200).then_some(())
            },
        )
        .await;

        let named = embeds(&stack, 8, json!({"model": "Canary"})).await;
        assert_eq!(
            served_by(&named),
            BTreeSet::from(["canary@canary".to_owned()])
        );
        let split = embeds(&stack, 40, json!({})).await;
        assert_eq!(
            served_by(&split),
            BTreeSet::from([
                "all-minilm-l6-v2@main".to_owned(),
                "canary@canary".to_owned()
            ]),
            "a 1:1 split over 40 requests reaches both models"
        );

        // What nobody serves is refused at once, naming the model.
        let (status, body) = stack
            .infer(json!({"task": "embed", "input": "x", "model": "nope"}))
            .await;
        assert_no_worker(status, &body, "nope");
        assert!(
            body["message"].as_str().unwrap().ends_with(
                "embed is served now with: all-minilm-l6-v2, canary (name one in `model`)"
            ),
            "{body}"
        );
        let (status, body) = stack
            .infer(json!({"task": "classify_image", "input": "aGk=", "model": "canary"}))
            .await;
        assert_no_worker(status, &body, "canary");
        let (status, body) = stack
            .infer(json!({"task": "classify_image", "input": "aGk="}))
            .await;
        assert_no_worker(status, &body, "efficientnet-lite0");
        let (status, body) = stack
            .infer(json!({"task": "embed", "input": "x", "model": "no.dots"}))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (422, Some("invalid_input")),
            "{body}"
        );
        let models = stack.get_json("/v1/models").await;
        let ids: Vec<&str> = (models["data"].as_array().unwrap().iter())
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["all-minilm-l6-v2", "canary", "echo"], "{models}");

        // The canary dies: its share goes to the model still served, and
        // naming it is refused once its heartbeat has expired.
        canary.kill();
        stack.wait_for_workers(1).await;
        wait_for(
            "the gateway to see the canary gone",
            Duration::from_secs(30),
            || async {
                let (status, body) = stack
                    .infer(json!({"task": "embed", "input": "x", "model": "canary"}))
                    .await;
                (status == 503).then_some(body)
            },
        )
        .await;
        let rest = embeds(&stack, 20, json!({})).await;
        assert_eq!(
            served_by(&rest),
            BTreeSet::from(["all-minilm-l6-v2@main".to_owned()])
        );
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
