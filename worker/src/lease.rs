//! The compute lease: workers that share a machine take turns at its cores.
//!
//! A lone request is fastest when its forward pass runs on every core, so
//! workers on one machine each get all of them (`THREADS` = cores); then two
//! passes at once would fight over the cores (and over the caches). So a
//! worker given a lease file (`COMPUTE_LEASE`) pulls and computes only while
//! it holds an exclusive `flock` on that file, the one file all the
//! machine's workers open. Meanwhile the others have no pull request out, so
//! batches queue in JetStream and the next holder takes them at once (and,
//! with `MAX_BATCH_TOKENS`, together); a holder that gets no work for a
//! second hands the lease on (`consume::pull`). The lease is never a correctness
//! matter: the kernel drops the lock when its holder dies however it dies,
//! and a holder that hangs is waited for at most `patience` (the ack wait:
//! as long as JetStream waits for a silent worker), after which a worker
//! computes without the lease rather than stall behind it, and goes on
//! without waiting until it finds the lease free again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest a turn lasts while batches keep coming, whatever the patience.
const LONGEST_TURN: Duration = Duration::from_secs(2);

/// The machine's lease file, and how long to wait for it.
#[derive(Debug, Clone)]
pub struct ComputeLease {
    path: PathBuf,
    patience: Duration,
    /// The last wait ran out: the holder is stuck, so do not wait again
    /// until the lease is found free.
    stuck: Arc<AtomicBool>,
}

/// One turn at the cores: the lock is held while this lives.
#[derive(Debug)]
pub enum Turn {
    /// The lease is held (through this open file).
    Held(File),
    /// The wait ran out (or the file could not be locked): computing anyway.
    Unheld,
}

impl ComputeLease {
    /// The lease at `path`, created if missing (a read-only one is fine: a
    /// lock is not a write); checked here so a bad path stops the worker at start.
    pub fn open(path: &Path, patience: Duration) -> std::io::Result<Self> {
        Self::file(path)?;
        Ok(Self {
            path: path.to_owned(),
            patience,
            stuck: Arc::default(),
        })
    }

    /// How long a holder keeps its turn while batches keep coming before it
    /// hands the lease on: a quarter of the waiters' patience, so a turn and
    /// the pass it ends on stay well inside it, and at most 2 s. Long turns
    /// pay: each worker warms its own 42 MB of weights and its pool, and on a
    /// 2-core Zen 4 VM 2 s turns gave c = 8 222 against 195 requests/s with
    /// 250 ms ones (medians of three alternated runs, docs/BENCHMARKS.md).
    pub fn max_turn(&self) -> Duration {
        (self.patience / 4).min(LONGEST_TURN)
    }

    fn file(path: &Path) -> std::io::Result<File> {
        File::open(path).or_else(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        })
    }

    /// Wait for this worker's turn. Each wait locks a file handle of its own,
    /// so a wait given up (patience, or the caller dropped the future) that
    /// gets the lock later releases it at once.
    pub async fn take(&self) -> Turn {
        let file = match Self::file(&self.path) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot open the compute lease; computing without it");
                return Turn::Unheld;
            }
        };
        if file.try_lock().is_ok() {
            self.stuck.store(false, Ordering::Relaxed);
            return Turn::Held(file);
        }
        if self.stuck.load(Ordering::Relaxed) {
            return Turn::Unheld;
        }
        let mut waiting = tokio::task::spawn_blocking(move || file.lock().map(|()| file));
        match tokio::time::timeout(self.patience, &mut waiting).await {
            Ok(Ok(Ok(file))) => Turn::Held(file),
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "cannot lock the compute lease; computing without it");
                Turn::Unheld
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "compute lease wait failed; computing without it");
                Turn::Unheld
            }
            Err(_) => {
                self.stuck.store(true, Ordering::Relaxed);
                tracing::warn!(
                    patience_ms = self.patience.as_millis() as u64,
                    "another worker has held the compute lease this long; computing without it until it is free"
                );
                Turn::Unheld
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_lasts_a_quarter_of_the_patience_and_at_most_two_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compute.lease");
        let turn = |ms| {
            ComputeLease::open(&path, Duration::from_millis(ms))
                .unwrap()
                .max_turn()
        };
        assert_eq!(
            turn(5_000),
            Duration::from_millis(1_250),
            "the default ack wait"
        );
        assert_eq!(turn(500), Duration::from_millis(125));
        assert_eq!(turn(60_000), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn one_turn_at_a_time_and_a_stuck_holder_is_waited_for_only_so_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compute.lease");
        let lease = ComputeLease::open(&path, Duration::from_secs(2)).unwrap();
        let first = lease.take().await;
        assert!(matches!(first, Turn::Held(_)));

        // Given back while another waits: that one gets it.
        let next = tokio::spawn({
            let lease = lease.clone();
            async move { lease.take().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        let second = next.await.unwrap();
        assert!(matches!(second, Turn::Held(_)));

        // Not given back: the wait runs out and the caller goes on unheld,
        // and then does not wait again while the holder is stuck.
        assert!(matches!(lease.take().await, Turn::Unheld));
        let patient = ComputeLease {
            patience: Duration::from_secs(3600),
            ..lease.clone()
        };
        let again = tokio::time::timeout(Duration::from_secs(30), patient.take()).await;
        assert!(
            matches!(again, Ok(Turn::Unheld)),
            "no second wait for a stuck holder"
        );

        // Free again: turns resume (once the wait given up above, which
        // may take the lock first, has let it go).
        drop(second);
        let mut resumed = false;
        for _ in 0..300 {
            if let Turn::Held(_) = patient.take().await {
                resumed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(resumed, "the lease is taken again once free");
    }
}
