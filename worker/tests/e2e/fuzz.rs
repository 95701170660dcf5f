//! Fuzzing the REST API with a tool we did not write: schemathesis generates
//! requests from the live gateway's `/openapi.json` (valid and invalid ones)
//! and checks every response: no 5xx, status codes, content types, headers
//! and bodies as the spec says, invalid input rejected, valid input accepted,
//! and the API key enforced. Bounded by a fixed seed and example count.

use crate::stack::Stack;
use jetinfer_testsupport::schemathesis_bin;
use std::time::Duration;

const KEY: &str = "fuzz-key";

/// schemathesis hook: a schema-valid `Idempotency-Key` gets a unique suffix.
/// Each generated request is a request of its own; without this, generated
/// keys repeat ("0") across bodies and are rightly refused with 422
/// `idempotency_key_reused`, which the single-request schema cannot say.
const HOOKS: &str = r#"
import re, uuid
import schemathesis

@schemathesis.hook
def before_call(ctx, case, **kwargs):
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(r"[!-~]{1,255}", key):
        case.headers["Idempotency-Key"] = f"{key[:222]}-{uuid.uuid4().hex}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_spec_violation_and_no_server_error() {
    tokio::time::timeout(Duration::from_secs(540), async {
        let stack = Stack::start(2, &["--api-keys", KEY]).await;
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
            .args(["--workers", "2", "--request-timeout", "60", "--no-color"])
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
