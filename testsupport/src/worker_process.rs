//! A real worker process, for tests that crash and kill workers.

use crate::nats_server::NatsServer;
use crate::paths::model_dir;
use std::path::PathBuf;
use std::process::{Child, Command};

/// A real worker process (for crash and kill tests); SIGKILLed on drop.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Start the worker binary `bin` as `id` with the real model, logged in
    /// to `nats` as a worker, with extra env vars. Integration tests of the
    /// worker package pass `env!("CARGO_BIN_EXE_worker")`, which cargo keeps fresh.
    pub fn start(
        bin: impl AsRef<std::ffi::OsStr>,
        nats: &NatsServer,
        id: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for worker log");
        let log = dir.path().join("worker.log");
        let file = std::fs::File::create(&log).expect("worker log");
        let child = Command::new(bin)
            .envs(nats.env(id))
            .env("WORKER_ID", id)
            .env("MODEL_DIR", model_dir())
            .env("THREADS", "1")
            .env("METRICS_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("cannot start worker");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    /// `kill -9`: no shutdown, no heartbeat removal, the batch in hand is abandoned.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as `docker stop` or the launcher sends it: the worker should
    /// finish the batch in hand, remove its heartbeat and exit.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// The process's exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Everything the worker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
