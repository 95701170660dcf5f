//! Async requests (`POST /infer/async`, `GET`/`DELETE /result/{id}`): the
//! answer lives in the `INFER_RESULTS_KV` bucket, so a second gateway on the
//! same NATS serves it, also after the gateway that took the request was
//! killed (`kill -9`) right after its 202; a request cancelled while queued
//! is never computed (the workers' `processed` and `cancelled` counters, in
//! their heartbeats, say so).

use crate::stack::{gateway_bin, slow_workers};
use futures::StreamExt;
use jetinfer_shared::clock::now_ms;
use jetinfer_shared::protocol::Heartbeat;
use jetinfer_testsupport::{wait_for, GatewayProcess, NatsServer};
use serde_json::{json, Value};
use std::time::Duration;

/// Whole-test bound.
const LIMIT: Duration = Duration::from_secs(180);

/// `method url` with an optional JSON body: status, `Location`, JSON body.
async fn call(
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let location = (response.headers().get("location")).map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        location,
        response.json().await.expect("a JSON body"),
    )
}

/// `POST /infer/async` on `gateway`: the request id, once 202 said queued.
async fn submit(gateway: &str, body: &Value) -> String {
    let (status, location, answer) = call(
        reqwest::Method::POST,
        &format!("{gateway}/infer/async"),
        Some(body),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "queued", "{answer}");
    let id = answer["request_id"]
        .as_str()
        .expect("a request id")
        .to_owned();
    assert_eq!(answer["status_url"], format!("/result/{id}"));
    assert_eq!(location.as_deref(), Some(format!("/result/{id}").as_str()));
    id
}

/// `GET /result/{id}` on `gateway`.
async fn result(gateway: &str, id: &str) -> (u16, Value) {
    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!("{gateway}/result/{id}"),
        None,
    )
    .await;
    (status, body)
}

/// Poll `GET /result/{id}` on `gateway` until it is no longer 202; every
/// 202 on the way says `queued` or `running`.
async fn answer(gateway: &str, id: &str) -> (u16, Value) {
    wait_for("the async answer", Duration::from_secs(60), || async {
        let (status, body) = result(gateway, id).await;
        if status == 202 {
            assert!(
                body["status"] == "queued" || body["status"] == "running",
                "{body}"
            );
            assert_eq!(body["request_id"], id);
            return None;
        }
        Some((status, body))
    })
    .await
}

/// Heartbeats of `n` live workers, each written after this call.
async fn fresh_beats(nats: &NatsServer, n: usize) -> Vec<Heartbeat> {
    let js = async_nats::jetstream::new(nats.client().await);
    let since = now_ms();
    wait_for("fresh heartbeats", Duration::from_secs(60), || async {
        let beats = jetinfer_shared::heartbeats::live(&js).await.ok()?;
        let fresh = beats.len() == n && beats.iter().all(|b| b.updated_at_ms > since);
        fresh.then_some(beats)
    })
    .await
}

fn embed(text: &str) -> Value {
    json!({"task": "embed", "input": text})
}

/// An answer of `embed` as `/infer` gives it: 200, 384 numbers, computed.
fn assert_embedding(status: u16, body: &Value, id: &str) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request_id"], id);
    assert_eq!(body["task"], "embed");
    assert_eq!(body["cached"], false);
    assert!(body["latency_ms"].as_f64().unwrap() > 0.0, "{body}");
    assert!(body["worker_id"].is_string() && body["model"].is_string());
    let vector = body["output"]["embedding"].as_array();
    assert_eq!(vector.map(Vec::len), Some(384), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_gateway_answers_an_async_request_also_after_a_kill_9_of_its_own() {
    const N: usize = 4;
    tokio::time::timeout(LIMIT, async {
        let nats = NatsServer::start();
        let bin = gateway_bin();
        let mut first = GatewayProcess::start(&bin, &nats, "gw-first", &[]).await;
        let second = GatewayProcess::start(&bin, &nats, "gw-second", &[]).await;
        let _workers = slow_workers(&nats, &["slow"], "1500");
        fresh_beats(&nats, 1).await;

        let mut ids = Vec::new();
        for i in 0..N {
            ids.push(submit(first.url(), &embed(&format!("async request {i}"))).await);
        }
        // Right after its 202s, the gateway that took them dies.
        first.kill();
        let (status, pending) = result(second.url(), &ids[N - 1]).await;
        assert_eq!(status, 202, "the last one is still waiting: {pending}");
        for id in &ids {
            let (status, body) = answer(second.url(), id).await;
            assert_embedding(status, &body, id);
        }
        let beats = fresh_beats(&nats, 1).await;
        println!(
            "async across a kill -9: {N} accepted by gw-first, all {N} answered by gw-second, \
             {} computed",
            beats[0].processed
        );
        assert_eq!(beats[0].processed, N as u64, "each computed once");

        // Unknown, malformed and deleted ids are 404 with the error envelope.
        for id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
            let (status, body) = result(second.url(), &id).await;
            assert_eq!(status, 404, "{body}");
            assert_eq!(body["error"], "result_not_found", "{body}");
            assert!(body["message"].is_string());
        }
        let url = format!("{}/result/{}", second.url(), ids[0]);
        let (status, _, deleted) = call(reqwest::Method::DELETE, &url, None).await;
        assert_eq!(
            (status, &deleted["status"]),
            (200, &json!("forgotten")),
            "{deleted}"
        );
        assert_eq!(result(second.url(), &ids[0]).await.0, 404);
        assert_eq!(call(reqwest::Method::DELETE, &url, None).await.0, 404);

        // A request that fails validation is refused at once, as /infer does.
        let (status, _, refused) = call(
            reqwest::Method::POST,
            &format!("{}/infer/async", second.url()),
            Some(&json!({"task": "embed"})),
        )
        .await;
        assert_eq!((status, &refused["error"]), (422, &json!("missing_field")));
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_async_request_is_never_computed() {
    tokio::time::timeout(LIMIT, async {
        let nats = NatsServer::start();
        let gateway = GatewayProcess::start(&gateway_bin(), &nats, "gw-cancel", &[]).await;
        let _workers = slow_workers(&nats, &["slow"], "2000");
        fresh_beats(&nats, 1).await;
        let mut started = (nats.client().await)
            .subscribe("infer.event.slow.started")
            .await
            .unwrap();

        // The one worker is busy with a first request; the second waits in
        // the queue and is cancelled there.
        let busy = submit(gateway.url(), &embed("keeps the worker busy")).await;
        started
            .next()
            .await
            .expect("the worker starts the first request");
        let cancelled = submit(gateway.url(), &embed("cancelled while queued")).await;
        assert_eq!(
            result(gateway.url(), &cancelled).await.1["status"],
            "queued"
        );
        let url = format!("{}/result/{cancelled}", gateway.url());
        let (status, _, deleted) = call(reqwest::Method::DELETE, &url, None).await;
        assert_eq!(status, 200, "{deleted}");
        assert_eq!(deleted["status"], "cancelled");
        assert_eq!(deleted["request_id"], cancelled.as_str());

        let (status, body) = answer(gateway.url(), &busy).await;
        assert_embedding(status, &body, &busy);
        let beats = wait_for(
            "the cancelled request skipped",
            Duration::from_secs(30),
            || async {
                let beats = fresh_beats(&nats, 1).await;
                (beats[0].cancelled == 1).then_some(beats)
            },
        )
        .await;
        println!(
            "cancel while queued: processed {}, cancelled {}",
            beats[0].processed, beats[0].cancelled
        );
        assert_eq!(beats[0].processed, 1, "only the first request was computed");
        let (status, gone) = result(gateway.url(), &cancelled).await;
        assert_eq!(status, 404, "{gone}");
    })
    .await
    .expect("test bounded in time");
}
