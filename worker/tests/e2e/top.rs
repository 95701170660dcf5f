//! `jetinfer-top` against a live stack, as an operator sees it: `--once`
//! lists the workers, and the live screen, driven in a real terminal by
//! tmux (`send-keys`, `capture-pane`), lists three workers alive, counts
//! traffic as it is answered, shows a killed worker dead and its `lost`
//! event, switches views by key, says when NATS is gone and resumes when it
//! is back, and quits on `q`.

use crate::stack::{Stack, WORKER};
use jetinfer_testsupport::{tmux_bin, wait_for, WorkerProcess};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(30);

/// A tmux server of the test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        Self {
            socket: format!("jetinfer-top-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Run tmux with `args` on this server; its standard output.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(tmux_bin())
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"]).1
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The number after `name ` on `screen`.
fn number(screen: &str, name: &str) -> Option<u64> {
    let rest = &screen[screen.find(&format!("{name} "))? + name.len() + 1..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Lines of `screen` naming `worker` as `state`.
fn shown(screen: &str, worker: &str, state: &str) -> bool {
    screen.lines().any(|l| {
        let cells: Vec<&str> = l
            .trim_matches(|c: char| !c.is_alphanumeric())
            .split_whitespace()
            .collect();
        cells.first() == Some(&worker) && cells.get(1) == Some(&state)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn top_shows_the_live_stack_in_a_terminal() {
    tokio::time::timeout(LIMIT, async {
        let stack = Stack::start(0, &[]).await;
        let mut workers: Vec<WorkerProcess> = (1..=3)
            .map(|i| WorkerProcess::start(WORKER, &stack.nats, &format!("w-{i}"), &[]))
            .collect();
        stack.wait_for_workers(3).await;
        let top = std::path::Path::new(WORKER).with_file_name("jetinfer-top");
        assert!(top.is_file(), "{} (cargo build --bins)", top.display());
        let login = stack.nats.env("dashboard");

        // --once: a snapshot in plain text, for scripts.
        let once = Command::new(&top)
            .arg("--once")
            .envs(login.clone())
            .output()
            .expect("jetinfer-top runs");
        let text = String::from_utf8_lossy(&once.stdout);
        assert!(
            once.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&once.stderr)
        );
        assert!(text.contains("NATS connected"), "{text}");
        for w in ["w-1", "w-2", "w-3"] {
            assert!(shown(&text, w, "alive"), "{w} alive in:\n{text}");
        }
        assert!(
            text.contains("work-all-minilm-l6-v2-embed-normal"),
            "{text}"
        );
        // A refused login is an error, not an empty snapshot.
        let refused = Command::new(&top)
            .args(["--once", "--gather-ms", "500"])
            .envs(login.clone())
            .env("NATS_PASSWORD", "not-the-password")
            .output()
            .expect("jetinfer-top runs");
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("not connected to NATS"), "{said}");

        // The live screen, in a real terminal.
        let tmux = Tmux::new();
        let mut start = vec!["new-session", "-d", "-s", "top", "-x", "180", "-y", "50"];
        let env: Vec<String> = login.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for e in &env {
            start.extend(["-e", e.as_str()]);
        }
        let bin = top.display().to_string();
        start.push(&bin);
        let (ok, _) = tmux.run(&start);
        assert!(ok, "tmux started jetinfer-top");
        wait_for("three workers alive on the screen", WAIT, || async {
            let screen = tmux.screen();
            ["w-1", "w-2", "w-3"]
                .iter()
                .all(|w| shown(&screen, w, "alive"))
                .then_some(())
        })
        .await;

        let calls = (0..40)
            .map(|i| stack.infer(json!({"task": "embed", "input": format!("top traffic {i}")})));
        for (status, body) in futures::future::join_all(calls).await {
            assert_eq!(status, 200, "{body}");
        }
        wait_for("the counters to rise", WAIT, || async {
            let screen = tmux.screen();
            (number(&screen, "completed")? >= 40 && number(&screen, "submitted")? >= 40)
                .then_some(())
        })
        .await;

        workers[0].kill();
        wait_for("the killed worker shown dead", WAIT, || async {
            shown(&tmux.screen(), "w-1", "dead").then_some(())
        })
        .await;
        assert!(shown(&tmux.screen(), "w-2", "alive"));

        tmux.run(&["send-keys", "-t", "top", "2"]);
        wait_for("its lost event in the events view", WAIT, || async {
            let screen = tmux.screen();
            (screen.contains("[2 events]")
                && screen
                    .lines()
                    .any(|l| l.contains("w-1") && l.contains("lost")))
            .then_some(())
        })
        .await;
        tmux.run(&["send-keys", "-t", "top", "3"]);
        wait_for("the requests view", WAIT, || async {
            let screen = tmux.screen();
            (screen.contains("[3 requests]") && screen.contains("embed")).then_some(())
        })
        .await;
        assert!(
            !tmux.screen().contains("top traffic"),
            "request text on the screen"
        );

        // NATS goes away and comes back: the screen says so, then resumes.
        stack.nats.kill();
        wait_for("NATS shown disconnected", WAIT, || async {
            (!tmux.screen().contains("NATS connected")).then_some(())
        })
        .await;
        stack.nats.restart();
        wait_for("NATS shown connected again", WAIT, || async {
            tmux.screen().contains("NATS connected").then_some(())
        })
        .await;

        tmux.run(&["send-keys", "-t", "top", "q"]);
        wait_for("jetinfer-top to quit on q", WAIT, || async {
            (!tmux.run(&["has-session", "-t", "top"]).0).then_some(())
        })
        .await;
        drop(workers);
        stack.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}
