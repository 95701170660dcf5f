//! Fault injection: crash, delay, hang and lost results.
//!
//! Every fault is off by default. Faults are wrappers: [`FaultyModel`] stands
//! between a forward pass and the model (delay, hang, crash) and
//! [`FaultyResults`] between a finished batch and its result publish (lost
//! result). The consume path calls them like the real thing and never asks
//! which fault fired; a fault that stops an answer comes back as
//! [`Unanswered`], the same error a real failure gives. Each fault that fires
//! is logged with `fault=<kind>` and counted in `jetinfer_worker_faults_injected_total`.

use crate::answers::{Answered, Model};
use crate::consume::deferred::Claims;
use crate::consume::progress::Progress;
use crate::consume::publish::ResultPublisher;
use clap::Args;
use jetinfer_shared::protocol::{BatchItem, ResultBatch, TaskBatch};
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

/// Fault injection knobs (all off by default, as is `Default`).
#[derive(Debug, Clone, Default, Args)]
pub struct FaultArgs {
    /// Probability per batch that the process exits mid-batch, like a real crash.
    #[arg(long, env = "CRASH_RATE", default_value_t = 0.0, value_parser = probability)]
    pub crash_rate: f64,
    /// Least extra latency added to every batch (a slow node or network).
    #[arg(long, env = "DELAY_MIN_MS", default_value_t = 0)]
    pub delay_min_ms: u64,
    /// Most extra latency added to every batch; uniform between min and max.
    #[arg(long, env = "DELAY_MAX_MS", default_value_t = 0)]
    pub delay_max_ms: u64,
    /// Probability per batch of holding it past its ack wait without acking, then dropping it.
    #[arg(long, env = "HANG_RATE", default_value_t = 0.0, value_parser = probability)]
    pub hang_rate: f64,
    /// Probability per batch of computing it and then losing the result, as a lost packet would.
    #[arg(long, env = "DROP_RATE", default_value_t = 0.0, value_parser = probability)]
    pub drop_rate: f64,
    /// Seed for reproducible fault sequences; random when unset.
    #[arg(long, env = "FAULT_SEED")]
    pub fault_seed: Option<u64>,
}

/// What happens to one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Computed as usual.
    Normal,
    /// The process exits before acking.
    Crash,
    /// Held without progress acks past the ack wait, then abandoned.
    Hang,
}

/// The dice of the fault injector, shared by both wrappers.
#[derive(Debug)]
pub struct Faults {
    args: FaultArgs,
    rng: Mutex<rand::rngs::StdRng>,
}

impl Faults {
    /// An injector for `args`.
    pub fn new(args: FaultArgs) -> Self {
        let rng = match args.fault_seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        Self {
            args,
            rng: Mutex::new(rng),
        }
    }

    /// True when any fault can fire (logged at start so nobody is surprised).
    pub fn any(&self) -> bool {
        let a = &self.args;
        a.crash_rate > 0.0 || a.hang_rate > 0.0 || a.drop_rate > 0.0 || a.delay_max_ms > 0
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, rand::rngs::StdRng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The extra latency and the fate of the next forward pass.
    fn pass(&self) -> (Duration, Fate) {
        let a = &self.args;
        let mut rng = self.rng();
        let (lo, hi) = (a.delay_min_ms, a.delay_max_ms.max(a.delay_min_ms));
        let delay = Duration::from_millis(if hi > 0 { rng.random_range(lo..=hi) } else { 0 });
        // One draw splits [0, 1) into crash | hang | normal.
        let roll: f64 = rng.random();
        let fate = if roll < a.crash_rate {
            Fate::Crash
        } else if roll < a.crash_rate + a.hang_rate {
            Fate::Hang
        } else {
            Fate::Normal
        };
        (delay, fate)
    }

    /// Whether the next computed result is lost instead of published.
    fn loses_result(&self) -> bool {
        self.args.drop_rate > 0.0 && self.rng().random::<f64>() < self.args.drop_rate
    }
}

/// Why a delivery of a batch ends without an answer: no result is published and
/// the batch is not acked, so JetStream redelivers it after its ack wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    /// Metric and log label (`unpublished`, or the injected fault).
    pub outcome: &'static str,
    /// What went wrong, for the `failed` event and the log.
    pub error: String,
    /// The process must exit with this status once the failure is reported
    /// (an injected crash: the batch is in hand and never acked).
    pub exit_code: Option<i32>,
}

impl Unanswered {
    fn fault(kind: &'static str, error: &str) -> Self {
        Self {
            outcome: kind,
            error: error.to_owned(),
            exit_code: None,
        }
    }
}

fn injected(kind: &'static str) {
    crate::metrics::fault(kind);
}

/// The model behind the injected delay, hang and crash, decided per forward
/// pass (one batch, or several merged by `MAX_BATCH_TOKENS`).
pub struct FaultyModel {
    model: Model,
    faults: Arc<Faults>,
    hang_for: Duration,
}

impl FaultyModel {
    /// `model` with `faults`; an injected hang holds a pass for `hang_for`
    /// (longer than the longest ack wait, so the batch is redelivered).
    pub fn new(model: Model, faults: Arc<Faults>, hang_for: Duration) -> Self {
        Self {
            model,
            faults,
            hang_for,
        }
    }

    /// Name of the model that computes `task`.
    pub fn name_for(&self, task: jetinfer_shared::protocol::Task) -> String {
        self.model.name_for(task)
    }

    /// Answer `items` in one forward pass, telling JetStream through `progress`
    /// that the batches are alive meanwhile. A hang sends no progress: a hung
    /// worker is silent, which is what makes JetStream redeliver.
    pub async fn answer(
        &self,
        items: &[BatchItem],
        progress: &Progress<'_>,
    ) -> Result<Vec<Answered>, Unanswered> {
        let (delay, fate) = self.faults.pass();
        if !delay.is_zero() {
            injected("delay");
            tracing::info!(
                fault = "delay",
                delay_ms = delay.as_millis() as u64,
                "injected delay"
            );
            progress.during(tokio::time::sleep(delay)).await;
        }
        match fate {
            Fate::Crash => {
                injected("crash");
                Err(Unanswered {
                    exit_code: Some(jetinfer_shared::shutdown::INJECTED_CRASH_EXIT_CODE),
                    ..Unanswered::fault("crash", "injected crash")
                })
            }
            Fate::Hang => {
                injected("hang");
                tokio::time::sleep(self.hang_for).await;
                Err(Unanswered::fault("hang", "injected hang"))
            }
            Fate::Normal => Ok(progress.during(self.model.answer(items)).await),
        }
    }
}

/// The result publisher behind injected lost results, decided per batch.
pub struct FaultyResults {
    results: ResultPublisher,
    faults: Arc<Faults>,
}

impl FaultyResults {
    /// `results` with `faults`.
    pub fn new(results: ResultPublisher, faults: Arc<Faults>) -> Self {
        Self { results, faults }
    }

    /// Publish `result` of `batch`, unless the result is lost on purpose
    /// (computed, then neither published nor acked, as if the packet vanished).
    pub async fn publish(
        &self,
        batch: &TaskBatch,
        claims: &Claims,
        result: &mut ResultBatch,
    ) -> Result<(), Unanswered> {
        if self.faults.loses_result() {
            injected("drop");
            return Err(Unanswered::fault("drop", "injected lost result"));
        }
        self.results
            .publish(batch, claims, result)
            .await
            .map_err(|error| Unanswered {
                outcome: "unpublished",
                error,
                exit_code: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(crash: f64, hang: f64, drop: f64) -> Faults {
        Faults::new(FaultArgs {
            crash_rate: crash,
            delay_min_ms: 10,
            delay_max_ms: 20,
            hang_rate: hang,
            drop_rate: drop,
            fault_seed: Some(7),
        })
    }

    #[test]
    fn rates_are_respected() {
        let f = faults(0.1, 0.2, 0.3);
        let (mut crash, mut hang, mut lost) = (0, 0, 0);
        for _ in 0..10_000 {
            let (delay, fate) = f.pass();
            assert!((10..=20).contains(&(delay.as_millis() as u64)));
            match fate {
                Fate::Crash => crash += 1,
                Fate::Hang => hang += 1,
                Fate::Normal => {}
            }
            lost += usize::from(f.loses_result());
        }
        let share = |n: usize| n as f64 / 10_000.0;
        assert!((share(crash) - 0.1).abs() < 0.02, "crash {crash}");
        assert!((share(hang) - 0.2).abs() < 0.02, "hang {hang}");
        assert!((share(lost) - 0.3).abs() < 0.02, "lost {lost}");
    }

    #[test]
    fn off_by_default_and_certain_at_one() {
        let off = faults(0.0, 0.0, 0.0);
        assert!((0..1000).all(|_| off.pass().1 == Fate::Normal && !off.loses_result()));
        assert_eq!(faults(0.0, 1.0, 0.0).pass().1, Fate::Hang);
        assert_eq!(faults(1.0, 0.0, 0.0).pass().1, Fate::Crash);
        assert!(faults(0.0, 0.0, 1.0).loses_result());
        assert!(probability("1.5").is_err());
        assert!(probability("-0.1").is_err());
        assert_eq!(probability("0.25"), Ok(0.25));
    }
}
