//! The API over NATS request-reply (`infer.api.<task>`, the micro service
//! `jetinfer-gateway`): the same JSON as `POST /infer`, the same errors
//! (`/infer`'s body, with `Nats-Service-Error-Code` the HTTP status), and any
//! gateway answers (a queue group: requests spread over two gateways, whose
//! `$SRV.STATS` count them).

use crate::stack::{gateway_bin, Stack};
use futures::StreamExt;
use jetinfer_testsupport::GatewayProcess;
use serde_json::{json, Value};
use std::time::Duration;

/// Whole-test bound.
const LIMIT: Duration = Duration::from_secs(180);

/// `nats req <subject> <body>`: the reply's error code header (if any) and JSON.
async fn request(client: &async_nats::Client, subject: &str, body: &str) -> (Option<u16>, Value) {
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(subject.to_owned(), body.to_owned().into()),
    )
    .await
    .expect("answered in time")
    .expect("a reply");
    let code = (reply.headers.as_ref())
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().parse().expect("a status code"));
    let value = serde_json::from_slice(&reply.payload).expect("a JSON reply");
    (code, value)
}

/// Every reply to one `$SRV` request within a second (one per instance).
async fn discover(client: &async_nats::Client, subject: &str) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_owned(), inbox, "".into())
        .await
        .unwrap();
    let mut all = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), replies.next()).await {
        all.push(serde_json::from_slice(&m.payload).unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_nats_api_answers_as_infer_does_from_any_gateway() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(1, &[]).await;
        let client = stack.nats.client().await;

        // The same answer as /infer: embed, then the other text tasks.
        let (status, http) = stack
            .infer(json!({"task": "embed", "input": "hello over NATS"}))
            .await;
        assert_eq!(status, 200, "{http}");
        let (code, nats) =
            request(&client, "infer.api.embed", r#"{"input":"hello over NATS"}"#).await;
        assert_eq!(code, None, "{nats}");
        assert_eq!(nats["task"], "embed");
        assert_eq!(nats["output"], http["output"], "the same embedding");
        assert_eq!(nats["model"], http["model"]);
        for (subject, body, field) in [
            (
                "infer.api.similarity",
                r#"{"input":{"query":"a cat","candidates":["a kitten","a truck"]}}"#,
                "scores",
            ),
            ("infer.api.classify", r#"{"input":"I love this"}"#, "label"),
            (
                "infer.api.echo",
                r#"{"input":"ping","task":"echo"}"#,
                "echo",
            ),
        ] {
            let (code, answer) = request(&client, subject, body).await;
            assert_eq!(code, None, "{subject}: {answer}");
            assert!(
                answer["output"][field].is_string() || answer["output"][field].is_array(),
                "{subject}: {answer}"
            );
            assert!(answer["request_id"].is_string());
        }
        assert_eq!(
            request(&client, "infer.api.classify", r#"{"input":"I love this"}"#)
                .await
                .1["output"]["label"],
            "positive"
        );

        // The same errors: /infer's body, the HTTP status in the header.
        for (subject, body, status, error) in [
            ("infer.api.embed", r#"{"input":""}"#, 422, "invalid_input"),
            (
                "infer.api.embed",
                r#"{"input":"x","task":"echo"}"#,
                422,
                "invalid_input",
            ),
            (
                "infer.api.embed",
                r#"{"input":"x","colour":1}"#,
                422,
                "unknown_field",
            ),
            ("infer.api.embed", "not json", 400, "invalid_json"),
            (
                "infer.api.similarity",
                r#"{"input":"no candidates"}"#,
                422,
                "invalid_input",
            ),
        ] {
            let (code, answer) = request(&client, subject, body).await;
            assert_eq!(code, Some(status), "{subject} {body}: {answer}");
            assert_eq!(answer["error"], error, "{subject} {body}: {answer}");
            assert!(answer["message"].is_string());
        }

        // A second gateway joins the queue group: requests spread over both.
        let second = GatewayProcess::start(&gateway_bin(), &stack.nats, "gw-second", &[]).await;
        let pings = discover(&client, "$SRV.PING.jetinfer-gateway").await;
        assert_eq!(pings.len(), 2, "two gateways registered: {pings:?}");
        const N: usize = 40;
        for i in 0..N {
            let body = format!(r#"{{"input":"spread {i}"}}"#);
            let (code, answer) = request(&client, "infer.api.echo", &body).await;
            assert_eq!(code, None, "{answer}");
            assert_eq!(answer["output"]["echo"], format!("spread {i}"));
        }
        let stats = discover(&client, "$SRV.STATS.jetinfer-gateway").await;
        let echoes: Vec<u64> = stats
            .iter()
            .map(|s| {
                let echo = s["endpoints"].as_array().unwrap().iter();
                echo.filter(|e| e["subject"] == "infer.api.echo")
                    .map(|e| e["num_requests"].as_u64().unwrap())
                    .sum()
            })
            .collect();
        println!("NATS API: {N} echo requests over two gateways, answered {echoes:?}");
        assert_eq!(echoes.len(), 2, "{stats:?}");
        assert!(
            echoes.iter().all(|&n| n > 0),
            "both gateways answered: {echoes:?}"
        );
        assert!(echoes.iter().sum::<u64>() >= N as u64);
        drop(second);
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
