//! `classify_image` through the whole stack: real photos (Debian's
//! python3-skimage and python-matplotlib-data, under `PHOTOS_DIR`) sent as
//! base64 JSON and as raw uploads, answered by EfficientNet-Lite0 on real
//! workers; broken, huge and oversized photos refused at the gateway with
//! their documented status and code.

use crate::stack::{Setup, Stack};
use base64::Engine;
use jetinfer_testsupport::{photo, png_header};
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(240);

/// Photos and the ImageNet classes that must be among their top five.
const PHOTOS: [(&str, &[u64]); 3] = [
    (
        "/usr/lib/python3/dist-packages/skimage/data/chelsea.png",
        &[281, 282, 283, 284, 285],
    ),
    (
        "/usr/lib/python3/dist-packages/skimage/data/coffee.png",
        &[967],
    ),
    (
        "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        &[652],
    ),
];

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The class indices of an answer's `top`, checked for shape on the way:
/// five classes, likeliest first, probabilities that sum to at most 1, and
/// `label` naming the first.
fn top_indices(body: &Value) -> Vec<u64> {
    let output = &body["output"];
    let top = output["top"].as_array().expect("a top list");
    assert_eq!(top.len(), 5, "{body}");
    let scores: Vec<f64> = top.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{body}");
    assert!(scores.iter().sum::<f64>() <= 1.0 + 1e-4, "{body}");
    assert_eq!(output["label"], top[0]["label"], "{body}");
    assert!(!output["label"].as_str().unwrap().is_empty());
    top.iter().map(|c| c["index"].as_u64().unwrap()).collect()
}

/// Every photo is recognised, as base64 JSON and as a raw upload alike, and
/// sent all at once (batched by the gateway) each gets the class it gets alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn photos_are_classified_by_the_image_model() {
    tokio::time::timeout(LIMIT, async {
        let setup = Setup {
            images: true,
            ..Setup::default()
        };
        let stack = Stack::start_with(2, &[], setup).await;
        let status = stack.status().await.expect("status");
        let models = &status["workers"][0]["models"];
        let want = json!([
            {"name": "all-minilm-l6-v2", "tasks": ["embed", "similarity", "classify"]},
            {"name": "efficientnet-lite0", "tasks": ["classify_image"]},
            {"name": "echo", "tasks": ["echo"]},
        ]);
        assert_eq!(models, &want);
        let ready = stack.get_json("/readyz").await;
        assert_eq!(
            ready["models"],
            json!({"all-minilm-l6-v2": 2, "echo": 2, "efficientnet-lite0": 2}),
            "{ready}"
        );
        let listed = stack.get_json("/v1/models").await;
        assert_eq!(listed["object"], "list", "{listed}");
        let ids: Vec<(&str, u64, &Value)> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap(),
                    m["workers"].as_u64().unwrap(),
                    &m["tasks"],
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                (
                    "all-minilm-l6-v2",
                    2,
                    &json!(["embed", "similarity", "classify"])
                ),
                ("echo", 2, &json!(["echo"])),
                ("efficientnet-lite0", 2, &json!(["classify_image"])),
            ],
            "{listed}"
        );

        let mut alone = Vec::new();
        for (path, classes) in PHOTOS {
            let bytes = photo(path);
            let (code, body) = stack
                .infer(json!({"task": "classify_image", "input": base64(&bytes)}))
                .await;
            assert_eq!(code, 200, "{path}: {body}");
            assert_eq!(body["model"], "efficientnet-lite0", "{body}");
            assert_eq!(body["task"], "classify_image", "{body}");
            let top = top_indices(&body);
            assert!(top.iter().any(|i| classes.contains(i)), "{path}: {body}");

            let content_type = match path.ends_with(".png") {
                true => "image/png",
                false => "image/jpeg",
            };
            let (code, raw) = stack
                .post_raw(
                    "/infer?task=classify_image&priority=high",
                    bytes,
                    content_type,
                )
                .await;
            assert_eq!(code, 200, "{path} raw: {raw}");
            assert_eq!(
                top_indices(&raw),
                top,
                "{path}: raw upload and base64 differ"
            );
            alone.push(top[0]);
        }

        // All at once, several times over: the batcher puts them in shared batches.
        let sends = PHOTOS.iter().cycle().take(12).map(|(path, _)| {
            let body = json!({"task": "classify_image", "input": base64(&photo(path))});
            async { stack.infer(body).await }
        });
        let answers = futures::future::join_all(sends).await;
        for (i, (code, body)) in answers.iter().enumerate() {
            assert_eq!(*code, 200, "{body}");
            assert_eq!(top_indices(body)[0], alone[i % PHOTOS.len()], "{body}");
        }

        // The text tasks are served beside it.
        let (code, body) = stack
            .infer(json!({"task": "embed", "input": "a cat"}))
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["model"], "all-minilm-l6-v2", "{body}");
        stack.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// `body` is the error `code` with `status`, and says what is wrong.
fn assert_error(status: u16, body: &Value, (want, code): (u16, &str)) {
    assert_eq!(
        (status, body["error"].as_str()),
        (want, Some(code)),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// What no model can take is refused at the gateway, before anything is
/// queued, with its status and code; the stack serves photos afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broken_huge_and_misaddressed_photos_get_their_errors() {
    tokio::time::timeout(LIMIT, async {
        let setup = Setup {
            images: true,
            ..Setup::default()
        };
        let stack = Stack::start_with(1, &["--max-image-bytes", "2000000"], setup).await;
        let chelsea = photo(PHOTOS[0].0);
        let mut truncated = chelsea.clone();
        truncated.truncate(chelsea.len() / 2);
        let json_cases = [
            (json!("bm90IGFuIGltYWdl"), 422, "invalid_image"), // "not an image"
            (json!(base64(&truncated)), 422, "invalid_image"),
            (json!("***"), 422, "invalid_image"),
            (json!(42), 422, "invalid_image"),
            (
                json!(base64(&png_header(60_000, 50_000))),
                413,
                "image_too_large",
            ),
        ];
        for (input, want, code) in json_cases {
            let (status, body) = stack
                .infer(json!({"task": "classify_image", "input": input}))
                .await;
            assert_error(status, &body, (want, code));
        }
        let raw_cases = [
            (
                "/infer?task=classify_image",
                truncated.clone(),
                "image/png",
                422,
                "invalid_image",
            ),
            (
                "/infer?task=classify_image",
                vec![0; 2_000_001],
                "image/png",
                413,
                "payload_too_large",
            ),
            (
                "/infer?task=embed",
                chelsea.clone(),
                "image/png",
                400,
                "invalid_query",
            ),
            (
                "/infer?priority=now",
                chelsea.clone(),
                "image/png",
                400,
                "invalid_query",
            ),
            (
                "/infer?task=classify_image&task=classify_image",
                chelsea.clone(),
                "image/png",
                400,
                "invalid_query",
            ),
            (
                "/infer?task=classify_image&size=9",
                chelsea.clone(),
                "image/png",
                400,
                "invalid_query",
            ),
            (
                "/infer?task=classify_image",
                chelsea.clone(),
                "application/octet-stream",
                415,
                "unsupported_media_type",
            ),
        ];
        for (path, bytes, content_type, want, code) in raw_cases {
            let (status, body) = stack.post_raw(path, bytes, content_type).await;
            assert_error(status, &body, (want, code));
        }
        // Without `task` a photo upload is classify_image.
        let (status, body) = stack.post_raw("/infer", chelsea, "image/png").await;
        assert_eq!(
            (status, &body["task"]),
            (200, &json!("classify_image")),
            "{body}"
        );
        // A JSON body's query is checked (as the spec says), not read.
        let (status, body) = stack
            .post_raw(
                "/infer?task=embed",
                br#"{"task":"embed","input":"a"}"#.to_vec(),
                "application/json",
            )
            .await;
        assert_error(status, &body, (400, "invalid_query"));
        stack.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// A photo travels as its 147 KiB crop, which a server with a 64 KiB
/// `max_payload` cannot carry: refused at once with 413, never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_photo_that_no_message_can_carry_is_refused_at_once() {
    tokio::time::timeout(LIMIT, async {
        let setup = Setup {
            images: true,
            max_payload: Some(64 * 1024),
            ..Setup::default()
        };
        let stack = Stack::start_with(1, &[], setup).await;
        let input = base64(&photo(PHOTOS[1].0));
        let (status, body) = stack
            .post_raw(
                "/infer",
                serde_json::to_vec(&json!({"task": "classify_image", "input": input})).unwrap(),
                "application/json",
            )
            .await;
        assert_error(status, &body, (413, "payload_too_large"));
        stack.shutdown().await;
    })
    .await
    .expect("test timed out");
}
