//! Invariants over generated input: hundreds of valid and invalid bodies,
//! from a fixed seed (a failure prints the body and reproduces), thrown at a
//! live stack. For every one: exactly one answer; 200 or a 4xx whose code is
//! one the API documents; embeddings of unit length and finite; similarity
//! scores in [-1, 1]; classification probabilities that sum to one over the
//! labels asked for.

use crate::stack::Stack;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const CASES: usize = 300;
const LIMIT: Duration = Duration::from_secs(600);
const SEED: u64 = 0x5eed_0123;

/// The 4xx codes the API documents for `POST /infer`.
const CLIENT_ERRORS: &[&str] = &[
    "invalid_json",
    "unsupported_media_type",
    "payload_too_large",
    "missing_field",
    "unknown_field",
    "unknown_task",
    "invalid_input",
    "input_too_large",
    "result_too_large",
];

/// Words and scripts texts are made of.
const WORDS: &[&str] = &[
    "cat",
    "the weather is nice",
    "Straße",
    "日本語のテキスト",
    "🙂🚀",
    "e\u{301}",
    "supercalifragilisticexpialidocious",
    "ﷺ",
    "x",
    "sports",
    "good",
    "bad",
];

/// What breaks naive handling: zero-width, controls, combining marks, soft
/// hyphen, byte-order mark, plain whitespace.
const INVISIBLE: &[&str] = &[
    "\u{200b}",
    "\u{0}",
    "\u{ad}",
    "\u{301}\u{308}",
    "\t",
    " ",
    "\n",
    "\u{feff}",
    "",
];

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

/// Mostly visible text with invisible characters mixed in; sometimes nothing visible.
fn text(rng: &mut StdRng) -> String {
    let n = rng.random_range(1..5);
    let visible = rng.random_bool(0.9);
    (0..n)
        .map(|_| match visible && rng.random_bool(0.7) {
            true => pick(rng, WORDS),
            false => pick(rng, INVISIBLE),
        })
        .collect::<Vec<_>>()
        .join(if rng.random_bool(0.5) { " " } else { "" })
}

fn texts(rng: &mut StdRng, max: usize) -> Vec<Value> {
    let n = rng.random_range(0..=max);
    let mut out: Vec<Value> = (0..n).map(|_| Value::String(text(rng))).collect();
    // Sometimes the same text twice (duplicate labels or candidates).
    if n > 0 && rng.random_bool(0.15) {
        out.push(out[0].clone());
    }
    out
}

/// A JSON value of the wrong kind for wherever it lands.
fn junk(rng: &mut StdRng) -> Value {
    match rng.random_range(0..6) {
        0 => Value::Null,
        1 => json!(rng.random_range(-5..5)),
        2 => json!(true),
        3 => json!([1, "two", null]),
        4 => json!({"nested": {"deeper": []}}),
        _ => json!("x".repeat(rng.random_range(0..20_000))),
    }
}

/// One request body: mostly well-formed, often subtly wrong.
fn body(rng: &mut StdRng) -> Value {
    let task = pick(
        rng,
        &[
            "embed",
            "similarity",
            "classify",
            "echo",
            "embed",
            "nope",
            "",
        ],
    );
    let input = match task {
        "similarity" if rng.random_bool(0.8) => {
            let query = text(rng);
            let mut candidates = texts(rng, 8);
            // A text scored against itself: the cosine must still be <= 1.
            if rng.random_bool(0.3) {
                candidates.push(Value::String(query.clone()));
            }
            json!({"query": query, "candidates": candidates})
        }
        _ if rng.random_bool(0.9) => Value::String(text(rng)),
        _ => junk(rng),
    };
    let mut body = json!({"task": task, "input": input});
    if task == "classify" && rng.random_bool(0.8) {
        body["labels"] = Value::Array(texts(rng, 5));
    }
    if rng.random_bool(0.2) {
        body["priority"] =
            [json!("high"), json!("normal"), junk(rng)][rng.random_range(0..3)].clone();
    }
    if rng.random_bool(0.1) {
        body["typo"] = junk(rng);
    }
    if rng.random_bool(0.05) {
        body.as_object_mut().expect("an object").remove("input");
    }
    body
}

fn finite_in(v: &Value, lo: f64, hi: f64) -> bool {
    v.as_f64()
        .is_some_and(|x| x.is_finite() && (lo..=hi).contains(&x))
}

/// Check one answer against the invariants; `Err` says which one broke.
fn check(sent: &Value, status: u16, answer: &Value) -> Result<(), String> {
    if status != 200 {
        let code = answer["error"].as_str().unwrap_or_default();
        if !(400..500).contains(&status) || !CLIENT_ERRORS.contains(&code) {
            return Err(format!("{status} {code}"));
        }
        return answer["message"]
            .as_str()
            .map(|_| ())
            .ok_or("no message".into());
    }
    let output = &answer["output"];
    match sent["task"].as_str() {
        Some("embed") => {
            let e = output["embedding"].as_array().ok_or("no embedding")?;
            let norm: f64 = e.iter().filter_map(Value::as_f64).map(|x| x * x).sum();
            if e.len() != 384
                || !e.iter().all(|x| finite_in(x, -1.0, 1.0))
                || (norm - 1.0).abs() > 1e-3
            {
                return Err(format!("embedding of {} values, norm² {norm}", e.len()));
            }
        }
        Some("similarity") => {
            let scores = output["scores"].as_array().ok_or("no scores")?;
            let asked = sent["input"]["candidates"].as_array().map_or(0, Vec::len);
            if scores.len() != asked || !scores.iter().all(|s| finite_in(&s["score"], -1.0, 1.0)) {
                return Err(format!(
                    "{} scores for {asked} candidates: {scores:?}",
                    scores.len()
                ));
            }
        }
        Some("classify") => {
            let scores = output["scores"].as_object().ok_or("no scores")?;
            let total: f64 = scores.values().filter_map(Value::as_f64).sum();
            let label = output["label"].as_str().ok_or("no label")?;
            if !scores.contains_key(label)
                || (total - 1.0).abs() > 1e-3
                || !scores.values().all(|p| finite_in(p, 0.0, 1.0))
            {
                return Err(format!("label {label}, scores {scores:?}"));
            }
            if let Some(labels) = sent["labels"].as_array() {
                if scores.len() != labels.len() {
                    return Err(format!(
                        "{} scores for {} labels",
                        scores.len(),
                        labels.len()
                    ));
                }
            }
        }
        Some("echo") if output["echo"] != sent["input"] => return Err("echo differs".into()),
        Some("echo") => {}
        other => return Err(format!("200 for task {other:?}")),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_bodies_each_get_one_valid_answer() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(2, &[]).await;
        let mut rng = StdRng::seed_from_u64(SEED);
        let bodies: Vec<Value> = (0..CASES).map(|_| body(&mut rng)).collect();
        let answers: Vec<(Value, u16, Value)> = futures::stream::iter(bodies)
            .map(|sent| async {
                let (status, answer) = stack.infer(sent.clone()).await;
                (sent, status, answer)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut ids = HashSet::new();
        let mut ok = 0;
        for (sent, status, answer) in &answers {
            check(sent, *status, answer)
                .unwrap_or_else(|why| panic!("{why}\nsent {sent}\ngot {status} {answer}"));
            if let Some(id) = answer["request_id"].as_str() {
                assert!(ids.insert(id.to_owned()), "request {id} answered twice");
            }
            ok += usize::from(*status == 200);
        }
        eprintln!(
            "invariants: {CASES} bodies, {ok} answered 200, {} refused with a 4xx",
            CASES - ok
        );
        assert!(
            (CASES / 4..CASES).contains(&ok),
            "the generator reaches both sides: {ok} of {CASES}"
        );
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
