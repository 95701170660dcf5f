//! `POST /v1/embeddings` driven by the official `openai` Python client (not
//! our code), pointed at a live stack with `base_url`: its embeddings equal
//! `/infer`'s, base64 (the client's default encoding) decodes to the same
//! floats, 2048 inputs come back in order with real token counts, and our
//! errors surface as the client's own exceptions.

use crate::stack::Stack;
use jetinfer_testsupport::{client_python, wait_for};
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(240);
const EXAMPLE: &str = "This is an example sentence";

/// Runs with `base_url` as argv[1]; prints one JSON document of what it saw.
const CLIENT: &str = r#"
import json, sys
import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="not-needed", max_retries=0)
out = {"version": openai.__version__}
one = client.embeddings.create(model="all-minilm-l6-v2", input="This is an example sentence")
out["default"] = one.data[0].embedding
out["model"] = one.model
out["usage"] = [one.usage.prompt_tokens, one.usage.total_tokens]
floats = client.embeddings.create(model="all-minilm-l6-v2", input="This is an example sentence",
                                  encoding_format="float", dimensions=384, user="test")
out["float"] = floats.data[0].embedding
many = client.embeddings.create(model="all-minilm-l6-v2", input=[f"sentence number {i}" for i in range(2048)])
out["many"] = {"count": len(many.data), "in_order": [d.index for d in many.data] == list(range(2048)),
               "tokens": many.usage.prompt_tokens, "third": many.data[3].embedding}
errors = {}
def refused(name, **kwargs):
    try:
        client.embeddings.create(**kwargs)
        errors[name] = "accepted"
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        errors[name] = {"class": type(e).__name__, "status": e.status_code,
                        "code": body.get("code"), "param": body.get("param"), "message": body.get("message")}
refused("dimensions", model="all-minilm-l6-v2", input="x", dimensions=128)
refused("tokens", model="all-minilm-l6-v2", input=[[101, 102]])
refused("empty", model="all-minilm-l6-v2", input="")
refused("no_worker", model="all-mpnet-base-v2", input="x")
out["errors"] = errors
print(json.dumps(out))
"#;

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openai_client_embeds_through_v1_embeddings() {
    tokio::time::timeout(LIMIT, async {
        // No grace: a model nobody serves is refused at once. Wait for the
        // gateway's view of the workers first.
        let stack = Stack::start(2, &["--no-worker-grace-ms", "0"]).await;
        wait_for(
            "the gateway to see the workers",
            Duration::from_secs(30),
            || async {
                let (status, _) = stack.infer(json!({"task": "embed", "input": "x"})).await;
                (status == 200).then_some(())
            },
        )
        .await;
        let out = tokio::process::Command::new(client_python())
            .args(["-c", CLIENT, &stack.url])
            .output()
            .await
            .expect("python runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the openai client failed:\n{stderr}");
        let seen: Value = serde_json::from_slice(&out.stdout).expect("the client's JSON");
        println!("openai {} against /v1/embeddings", seen["version"]);

        let (status, infer) = stack
            .infer(json!({"task": "embed", "input": EXAMPLE}))
            .await;
        assert_eq!(status, 200, "{infer}");
        let reference = floats(&infer["output"]["embedding"]);
        let by_default = floats(&seen["default"]);
        let as_floats = floats(&seen["float"]);
        assert_eq!(by_default.len(), 384);
        assert!(
            cosine(&by_default, &reference) >= 0.9999,
            "base64 (the client's default) differs from /infer"
        );
        assert!(
            cosine(&as_floats, &reference) >= 0.9999,
            "float differs from /infer"
        );
        assert_eq!(seen["model"], "all-minilm-l6-v2");
        // [CLS] this is an example sentence [SEP]
        assert_eq!(seen["usage"], json!([7, 7]), "{seen}");

        let many = &seen["many"];
        assert_eq!(
            (many["count"].as_u64(), many["in_order"].as_bool()),
            (Some(2048), Some(true)),
            "{many}"
        );
        assert!(many["tokens"].as_u64().unwrap() >= 2048 * 4, "{many}");
        let (_, third) = stack
            .infer(json!({"task": "embed", "input": "sentence number 3"}))
            .await;
        assert!(
            cosine(
                &floats(&many["third"]),
                &floats(&third["output"]["embedding"])
            ) >= 0.9999
        );

        let errors = &seen["errors"];
        let expect = |name: &str, class: &str, status: u64, code: &str| {
            let e = &errors[name];
            assert_eq!(
                (
                    e["class"].as_str(),
                    e["status"].as_u64(),
                    e["code"].as_str()
                ),
                (Some(class), Some(status), Some(code)),
                "{name}: {e}"
            );
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}: {e}"
            );
        };
        expect("dimensions", "BadRequestError", 400, "invalid_input");
        assert_eq!(errors["dimensions"]["param"], "dimensions");
        expect("tokens", "BadRequestError", 400, "invalid_input");
        expect("empty", "BadRequestError", 400, "invalid_input");
        expect("no_worker", "InternalServerError", 503, "no_worker");
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
