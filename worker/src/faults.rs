//! Fault injection: crash, delay, hang and lost results, decided per forward
//! pass (one batch, or several merged by `MAX_BATCH_TOKENS`) in one place.
//!
//! Every fault is off by default. The consumer asks [`Faults::plan`] once per
//! batch and acts on the answer; nothing else in the worker knows faults
//! exist. Each fault that fires is logged with `fault=<kind>`.

use clap::Args;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;
use std::time::Duration;

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

/// Fault injection knobs (all off by default).
#[derive(Debug, Clone, Args)]
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

/// What happens to one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Computed, published, acked.
    Normal,
    /// The process exits before acking.
    Crash,
    /// Held without ack past the ack wait, then abandoned.
    Hang,
    /// Computed, but the result is never published and the batch never acked.
    Drop,
}

/// The plan for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Extra latency before computing.
    pub delay: Duration,
    /// What happens after that.
    pub fate: Fate,
}

/// The worker's fault injector.
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

    /// Decide the fate of the next batch.
    pub fn plan(&self) -> Plan {
        let a = &self.args;
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let (lo, hi) = (a.delay_min_ms, a.delay_max_ms.max(a.delay_min_ms));
        let delay = Duration::from_millis(if hi > 0 { rng.random_range(lo..=hi) } else { 0 });
        // One draw splits [0, 1) into crash | hang | drop | normal.
        let roll: f64 = rng.random();
        let fate = if roll < a.crash_rate {
            Fate::Crash
        } else if roll < a.crash_rate + a.hang_rate {
            Fate::Hang
        } else if roll < a.crash_rate + a.hang_rate + a.drop_rate {
            Fate::Drop
        } else {
            Fate::Normal
        };
        Plan { delay, fate }
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
        let mut counts = [0usize; 4];
        for _ in 0..10_000 {
            let plan = f.plan();
            assert!((10..=20).contains(&(plan.delay.as_millis() as u64)));
            counts[plan.fate as usize] += 1;
        }
        let share = |i: usize| counts[i] as f64 / 10_000.0;
        assert!(
            (share(Fate::Crash as usize) - 0.1).abs() < 0.02,
            "{counts:?}"
        );
        assert!(
            (share(Fate::Hang as usize) - 0.2).abs() < 0.02,
            "{counts:?}"
        );
        assert!(
            (share(Fate::Drop as usize) - 0.3).abs() < 0.02,
            "{counts:?}"
        );
    }

    #[test]
    fn off_by_default_and_certain_at_one() {
        assert!(!faults(0.0, 0.0, 0.0).plan().fate.eq(&Fate::Crash));
        assert_eq!(faults(0.0, 1.0, 0.0).plan().fate, Fate::Hang);
        assert!(probability("1.5").is_err());
        assert!(probability("-0.1").is_err());
        assert_eq!(probability("0.25"), Ok(0.25));
    }
}
