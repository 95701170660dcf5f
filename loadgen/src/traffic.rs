//! Traffic shapes: when each request is sent, and which task it asks for.

use clap::ValueEnum;
use jetinfer_shared::protocol::Task;
use rand::Rng;
use serde::Serialize;
use std::time::Duration;

/// How requests are spread over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// `--burst-size` requests at once, then `--burst-gap-ms` of silence, repeated.
    Burst,
    /// A steady `--rate` requests per second.
    Sustained,
    /// Random arrivals at a mean of `--rate` per second (exponential gaps).
    Poisson,
    /// A third each of burst, sustained and poisson, in that order.
    Mixed,
    /// `--concurrency` clients, each sending its next request when the last is answered.
    Closed,
}

/// Parameters of the open-loop patterns.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Requests in total.
    pub requests: usize,
    /// Requests per second (sustained, poisson).
    pub rate: f64,
    /// Requests per burst.
    pub burst_size: usize,
    /// Silence between bursts.
    pub burst_gap: Duration,
}

fn burst(n: usize, shape: &Shape) -> Vec<Duration> {
    (0..n)
        .map(|i| shape.burst_gap * (i / shape.burst_size.max(1)) as u32)
        .collect()
}

fn sustained(n: usize, shape: &Shape) -> Vec<Duration> {
    (0..n)
        .map(|i| Duration::from_secs_f64(i as f64 / shape.rate))
        .collect()
}

fn poisson(n: usize, shape: &Shape, rng: &mut impl Rng) -> Vec<Duration> {
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            let at = Duration::from_secs_f64(t);
            // Inverse-CDF sample of an exponential gap with mean 1/rate.
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            t += -u.ln() / shape.rate;
            at
        })
        .collect()
}

/// Send offsets from the start for an open-loop pattern (empty for `closed`,
/// whose timing is set by the answers).
pub fn schedule(pattern: Pattern, shape: &Shape, rng: &mut impl Rng) -> Vec<Duration> {
    let n = shape.requests;
    match pattern {
        Pattern::Burst => burst(n, shape),
        Pattern::Sustained => sustained(n, shape),
        Pattern::Poisson => poisson(n, shape, rng),
        Pattern::Closed => Vec::new(),
        Pattern::Mixed => {
            let third = n / 3;
            let mut out = burst(third, shape);
            let mut offset = out.last().copied().unwrap_or_default() + shape.burst_gap;
            for phase in [sustained(third, shape), poisson(n - 2 * third, shape, rng)] {
                let end = phase.last().copied().unwrap_or_default();
                out.extend(phase.into_iter().map(|d| d + offset));
                offset += end + Duration::from_secs_f64(1.0 / shape.rate);
            }
            out
        }
    }
}

/// Weighted task choice, parsed from `embed=3,classify=1`.
#[derive(Debug, Clone)]
pub struct TaskMix(Vec<(Task, u32)>);

impl std::str::FromStr for TaskMix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mix = s
            .split(',')
            .map(|part| {
                let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
                let task: Task = name.trim().parse().map_err(|e| format!("{e}"))?;
                let weight: u32 = weight
                    .trim()
                    .parse()
                    .map_err(|e| format!("weight of {name}: {e}"))?;
                Ok((task, weight))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if mix.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            return Err("the task mix needs a positive weight".into());
        }
        Ok(TaskMix(mix))
    }
}

impl TaskMix {
    /// Does the mix send `task` at all?
    pub fn sends(&self, task: Task) -> bool {
        self.0.iter().any(|(t, w)| *t == task && *w > 0)
    }

    /// Pick a task by weight.
    pub fn pick(&self, rng: &mut impl Rng) -> Task {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut roll = rng.random_range(0..total);
        for (task, weight) in &self.0 {
            if roll < *weight {
                return *task;
            }
            roll -= weight;
        }
        self.0[0].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn shape(n: usize) -> Shape {
        Shape {
            requests: n,
            rate: 10.0,
            burst_size: 4,
            burst_gap: Duration::from_secs(1),
        }
    }

    #[test]
    fn every_pattern_sends_the_requested_count_in_time_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for p in [
            Pattern::Burst,
            Pattern::Sustained,
            Pattern::Poisson,
            Pattern::Mixed,
        ] {
            let s = schedule(p, &shape(30), &mut rng);
            assert_eq!(s.len(), 30, "{p:?}");
            assert!(s.windows(2).all(|w| w[0] <= w[1]), "{p:?} not ordered");
        }
        let b = schedule(Pattern::Burst, &shape(8), &mut rng);
        assert_eq!(b[3], Duration::ZERO);
        assert_eq!(b[4], Duration::from_secs(1));
        let s = schedule(Pattern::Sustained, &shape(11), &mut rng);
        assert_eq!(s[10], Duration::from_secs(1));
        let p = schedule(Pattern::Poisson, &shape(2000), &mut rng);
        let mean_rate = 2000.0 / p.last().unwrap().as_secs_f64();
        assert!(
            (mean_rate - 10.0).abs() < 1.0,
            "poisson mean rate {mean_rate}"
        );
    }

    #[test]
    fn task_mix_respects_weights() {
        let mix: TaskMix = "embed=3,echo=1".parse().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let embeds = (0..4000)
            .filter(|_| mix.pick(&mut rng) == Task::Embed)
            .count();
        assert!((2800..3200).contains(&embeds), "{embeds}");
        assert!("dance=1".parse::<TaskMix>().is_err());
        assert!("embed=0".parse::<TaskMix>().is_err());
    }
}
