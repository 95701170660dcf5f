//! The restart policy every child shares, as a container runtime's would:
//! a child that exits is started again, unless it exits so often that
//! restarting is pointless (a crash loop: a port taken, a bad setting), when
//! the stack stops and says which child and why, instead of spinning forever.
//!
//! Pure bookkeeping on the times it is given, so it is tested without waiting.

use std::collections::VecDeque;
use std::fmt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A worker's injected crash: restarted but never counted, so fault
/// injection under load does not end the stack as a crash loop.
const INJECTED_CRASH: i32 = jetinfer_shared::shutdown::INJECTED_CRASH_EXIT_CODE;

/// How many restarts a child gets within a time window.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`; the next exit stops the stack. 0: never restart.
    pub max_restarts: usize,
    /// The sliding window the restarts are counted in.
    pub window: Duration,
}

/// What to do about one exit.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start it again; `counted` restarts in the window so far, this one
    /// included (0 for an injected crash).
    Restart {
        /// Restarts within the window, this one included.
        counted: usize,
    },
    /// Too many exits within the window: stop the stack.
    CrashLoop(CrashLoop),
}

/// Why the stack gives up on a child.
#[derive(Debug, PartialEq, Eq)]
pub struct CrashLoop {
    /// Exits within the window, the last one included.
    pub exits: usize,
    /// The window.
    pub window: Duration,
}

impl fmt::Display for CrashLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a crash loop: {} exits within {} s (MAX_RESTARTS and RESTART_WINDOW_S set the limit)",
            self.exits,
            self.window.as_secs()
        )
    }
}

/// One child's recent exits under a policy.
#[derive(Debug)]
pub struct Restarts {
    policy: RestartPolicy,
    /// Times of the counted exits still inside the window, oldest first.
    recent: VecDeque<Instant>,
}

impl Restarts {
    /// No exits yet.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            recent: VecDeque::new(),
        }
    }

    /// The policy it applies, for messages.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// Record that the child exited with `status` at `now`, and decide.
    pub fn on_exit(&mut self, status: ExitStatus, now: Instant) -> Verdict {
        if status.code() == Some(INJECTED_CRASH) {
            return Verdict::Restart { counted: 0 };
        }
        while let Some(&oldest) = self.recent.front() {
            if now.duration_since(oldest) < self.policy.window {
                break;
            }
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let exits = self.recent.len();
        if exits > self.policy.max_restarts {
            return Verdict::CrashLoop(CrashLoop {
                exits,
                window: self.policy.window,
            });
        }
        Verdict::Restart { counted: exits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const POLICY: RestartPolicy = RestartPolicy {
        max_restarts: 5,
        window: Duration::from_secs(60),
    };

    fn killed() -> ExitStatus {
        ExitStatus::from_raw(libc::SIGKILL)
    }

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn the_sixth_exit_within_a_minute_is_a_crash_loop() {
        let t0 = Instant::now();
        let mut r = Restarts::new(POLICY);
        for i in 1..=5 {
            assert_eq!(
                r.on_exit(killed(), at(t0, i)),
                Verdict::Restart {
                    counted: i as usize
                }
            );
        }
        assert_eq!(
            r.on_exit(exited(1), at(t0, 6)),
            Verdict::CrashLoop(CrashLoop {
                exits: 6,
                window: POLICY.window
            })
        );
    }

    #[test]
    fn exits_spread_out_are_restarted_forever() {
        let t0 = Instant::now();
        let mut r = Restarts::new(POLICY);
        // One exit every 13 s: never more than 5 within any 60 s.
        for i in 0..100 {
            let verdict = r.on_exit(exited(1), at(t0, 13 * i));
            assert!(
                matches!(verdict, Verdict::Restart { .. }),
                "exit {i}: {verdict:?}"
            );
        }
    }

    #[test]
    fn exits_older_than_the_window_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Restarts::new(POLICY);
        for i in 0..5 {
            r.on_exit(killed(), at(t0, i));
        }
        // 60 s after the first exit it no longer counts; the other four do.
        assert_eq!(
            r.on_exit(killed(), at(t0, 60)),
            Verdict::Restart { counted: 5 }
        );
        assert!(matches!(
            r.on_exit(killed(), at(t0, 60)),
            Verdict::CrashLoop(CrashLoop { exits: 6, .. })
        ));
    }

    #[test]
    fn injected_crashes_are_restarted_and_not_counted() {
        let t0 = Instant::now();
        let mut r = Restarts::new(POLICY);
        for i in 0..50 {
            assert_eq!(
                r.on_exit(exited(INJECTED_CRASH), at(t0, i)),
                Verdict::Restart { counted: 0 }
            );
        }
        assert_eq!(
            r.on_exit(killed(), at(t0, 50)),
            Verdict::Restart { counted: 1 }
        );
    }

    #[test]
    fn no_restarts_allowed_means_the_first_exit_stops_the_stack() {
        let mut r = Restarts::new(RestartPolicy {
            max_restarts: 0,
            window: POLICY.window,
        });
        assert!(matches!(
            r.on_exit(exited(0), Instant::now()),
            Verdict::CrashLoop(CrashLoop { exits: 1, .. })
        ));
    }
}
