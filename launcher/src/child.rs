//! One supervised child process: started with its log file, restarted with
//! the same recipe when it exits (within its restart policy), stopped politely.

use crate::restart::{RestartPolicy, Restarts, Verdict};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A named child process of the stack.
pub struct Proc {
    /// Name shown to the user (`nats-server`, `worker-1`, `gateway`).
    pub name: String,
    /// The recipe, kept to restart it: same arguments, so nats-server comes
    /// back on the same store and its JetStream data survives.
    spec: Spec,
    child: Child,
    restarts: Restarts,
}

/// How to start a child.
#[derive(Clone)]
pub struct Spec {
    /// Program path.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// File that receives stdout and stderr.
    pub log: PathBuf,
}

fn spawn(spec: &Spec) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("cannot open {}", spec.log.display()))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        // Own process group: a terminal's Ctrl-C reaches only the launcher,
        // which then stops the children in order (nats-server last).
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL
    // the child if the launcher dies, so a `kill -9` of the launcher leaves no orphans.
    // The signal follows the *thread* that spawned the child: spawn only from
    // the launcher's main future (the main thread), never from a spawned task
    // on a runtime thread that may exit.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", spec.program.display()))
}

impl Proc {
    /// Start `spec` as `name`, to be restarted under `policy`.
    pub fn start(name: &str, spec: Spec, policy: RestartPolicy) -> anyhow::Result<Self> {
        let child = spawn(&spec)?;
        Ok(Self {
            name: name.to_owned(),
            spec,
            child,
            restarts: Restarts::new(policy),
        })
    }

    /// Log file of this child.
    pub fn log(&self) -> &Path {
        &self.spec.log
    }

    /// Exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// If it has exited, start it again with the same recipe, as a container
    /// restart policy would; an error (the caller stops the stack) when it
    /// is crash-looping or cannot be started any more.
    pub fn keep_alive(&mut self, now: Instant) -> anyhow::Result<()> {
        let Some(status) = self.exited() else {
            return Ok(());
        };
        let log = self.spec.log.display();
        let policy = self.restarts.policy();
        match self.restarts.on_exit(status, now) {
            Verdict::Restart { counted: 0 } => println!(
                "{} exited ({status}); restarting it (an injected crash, not counted; log {log})",
                self.name
            ),
            Verdict::Restart { counted } => println!(
                "{} exited ({status}); restarting it (restart {counted} of {} within {} s; log {log})",
                self.name,
                policy.max_restarts,
                policy.window.as_secs()
            ),
            Verdict::CrashLoop(why) => bail!(
                "{} exited ({status}) and is not restarted again: {why}; see {log}",
                self.name
            ),
        }
        self.child = spawn(&self.spec).with_context(|| format!("cannot restart {}", self.name))?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child's pid, which is still unreaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!("  {} did not stop in {grace:?}; killing it", self.name);
            let _ = self.child.kill().await;
        }
    }
}
