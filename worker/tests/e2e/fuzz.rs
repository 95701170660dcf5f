//! Fuzzing the REST API with a tool we did not write: schemathesis generates
//! requests from the live gateway's `/openapi.json` (valid and invalid ones)
//! and checks every response: no 5xx, status codes, content types, headers
//! and bodies as the spec says, invalid input rejected, valid input accepted,
//! and the API key enforced. Bounded by a fixed seed and example count.

use crate::stack::{Setup, Stack};
use jetinfer_testsupport::schemathesis_bin;
use std::time::Duration;

const KEY: &str = "fuzz-key";

/// schemathesis hooks for what a schema cannot say of one request:
/// - a schema-valid `Idempotency-Key` gets a unique suffix. Each generated
///   request is a request of its own; without this, generated keys repeat
///   ("0") across bodies and are rightly refused with 422
///   `idempotency_key_reused`;
/// - a schema-valid (non-empty string) `classify_image` input becomes a real
///   photo, base64: the schema says "base64", not "a PNG that decodes", and
///   random base64 is rightly refused with 422 `invalid_image` (that refusal
///   is `images.rs`'s to test). Wrong types and empty strings stay as generated;
/// - a schema-valid `model` (in the body, or a photo upload's query) becomes
///   the model the stack serves the request's task with: the schema says "a
///   model name", not "one a live worker serves", and any other name is
///   rightly answered 503 `no_worker` (`routing.rs` tests that). Names the
///   pattern refuses stay as generated;
/// - a schema-valid `/v1/embeddings` `dimensions` becomes 384, the model's:
///   the schema cannot say which size a model has, and any other is rightly
///   refused with 400.
const HOOKS: &str = r#"
import base64, re, struct, uuid, zlib
import schemathesis

def png_1x1():
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")

PHOTO = base64.b64encode(png_1x1()).decode()
MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SERVED = {"classify_image": "efficientnet-lite0", "echo": "echo"}

def valid_model(value):
    return isinstance(value, str) and MODEL.fullmatch(value)

@schemathesis.hook
def before_call(ctx, case, **kwargs):
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(r"[!-~]{1,255}", key):
        case.headers["Idempotency-Key"] = f"{key[:222]}-{uuid.uuid4().hex}"
    body = case.body
    if isinstance(body, dict) and body.get("task") == "classify_image" \
            and isinstance(body.get("input"), str) and body["input"]:
        body["input"] = PHOTO
    if isinstance(body, dict) and valid_model(body.get("model")):
        body["model"] = SERVED.get(body.get("task"), "all-minilm-l6-v2")
    dims = body.get("dimensions") if isinstance(body, dict) else None
    if isinstance(dims, (int, float)) and not isinstance(dims, bool) \
            and dims >= 1 and float(dims).is_integer():
        body["dimensions"] = 384
    if case.query and valid_model(case.query.get("model")):
        case.query["model"] = "efficientnet-lite0"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_spec_violation_and_no_server_error() {
    tokio::time::timeout(Duration::from_secs(540), async {
        // Workers serve every task the spec describes, photos included.
        let setup = Setup {
            images: true,
            ..Setup::default()
        };
        let stack = Stack::start_with(2, &["--api-keys", KEY], setup).await;
        let spec = format!("{}/openapi.json", stack.url);
        let dir = tempfile::tempdir().unwrap(); // schemathesis writes its caches here
        std::fs::write(dir.path().join("unique_keys.py"), HOOKS).unwrap();
        let out = tokio::process::Command::new(schemathesis_bin())
            .current_dir(dir.path())
            .env("SCHEMATHESIS_HOOKS", "unique_keys")
            .env("PYTHONPATH", dir.path())
            .args([
                "run",
                &spec,
                "--checks",
                "all",
                "--max-examples",
                "40",
                "--seed",
                "7",
            ])
            // One worker thread: with two, hypothesis's `ast.parse` of its
            // lambdas' source ran in both threads at once and CPython 3.11's
            // parser failed ("AST constructor recursion depth mismatch"), a
            // race in the interpreter, not a finding.
            .args(["--workers", "1", "--request-timeout", "60", "--no-color"])
            .args(["--header", &format!("Authorization: Bearer {KEY}")])
            .output()
            .await
            .expect("schemathesis runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        // The counts, for the record (`cargo test -- --nocapture` shows them).
        if let Some(line) = text.lines().find(|l| l.contains("generated")) {
            println!("schemathesis: {}", line.trim());
        }
        assert!(out.status.success(), "schemathesis found problems:\n{text}");
        assert!(text.contains("passed"), "{text}");
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
