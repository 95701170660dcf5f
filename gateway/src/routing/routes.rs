//! `MODEL_ROUTES`: the model each task runs on when a request names none,
//! optionally split by weight (a canary):
//! `embed:all-minilm-l6-v2=90,all-mpnet-base-v2=10;similarity:all-mpnet-base-v2`.
//! A task without a route runs on its default model
//! ([`ModelName::default_for`]).

use jetinfer_shared::protocol::{ModelName, Task};
use rand::Rng;
use std::collections::BTreeMap;
use std::str::FromStr;

/// A task's models, each with its weight (all weights > 0).
type Split = Vec<(ModelName, u32)>;

/// The parsed `MODEL_ROUTES`: per task, the models and their weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRoutes(BTreeMap<Task, Split>);

/// `MODEL_ROUTES` cannot be read; the message names the part and the form.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("MODEL_ROUTES: {0}; the form is `task:model=weight,model=weight;task:model` (e.g. `embed:all-minilm-l6-v2=90,all-mpnet-base-v2=10`)")]
pub struct RoutesError(String);

impl FromStr for ModelRoutes {
    type Err = RoutesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut routes = BTreeMap::new();
        for route in s.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let (task, models) = route
                .split_once(':')
                .ok_or_else(|| RoutesError(format!("{route:?} names no task before `:`")))?;
            let task: Task = task
                .trim()
                .parse()
                .map_err(|e| RoutesError(format!("{e}")))?;
            let split = models
                .split(',')
                .map(|m| model_weight(m.trim()))
                .collect::<Result<Split, _>>()?;
            if split.iter().all(|(_, w)| *w == 0) {
                return Err(RoutesError(format!(
                    "{task} has no model with a weight above 0"
                )));
            }
            if routes.insert(task, split).is_some() {
                return Err(RoutesError(format!("{task} is routed twice")));
            }
        }
        Ok(Self(routes))
    }
}

/// `model` (weight 1) or `model=weight`.
fn model_weight(part: &str) -> Result<(ModelName, u32), RoutesError> {
    let (model, weight) = match part.split_once('=') {
        Some((model, weight)) => {
            let weight = weight.trim().parse::<u32>().map_err(|e| {
                RoutesError(format!(
                    "the weight of {:?} is {weight:?}: {e}",
                    model.trim()
                ))
            })?;
            (model.trim(), weight)
        }
        None => (part, 1),
    };
    let model = model.parse().map_err(|e| RoutesError(format!("{e}")))?;
    Ok((model, weight))
}

impl ModelRoutes {
    /// The model a request for `task` naming none runs on: one of the task's
    /// routed models drawn by weight, among those `live` says a worker serves
    /// now (so a canary with no worker takes no traffic); among all of them
    /// when none is live (the caller then answers `no_worker`). Unrouted: the
    /// task's default model.
    pub fn pick(&self, task: Task, live: impl Fn(&ModelName) -> bool) -> ModelName {
        let Some(split) = self.0.get(&task) else {
            return ModelName::default_for(task);
        };
        let weighted = |m: &&(ModelName, u32)| m.1 > 0;
        let serving: Split = (split.iter().filter(weighted))
            .filter(|(m, _)| live(m))
            .cloned()
            .collect();
        let from = if serving.is_empty() { split } else { &serving };
        let total: u64 = from.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut ticket = rand::rng().random_range(0..total.max(1));
        for (model, weight) in from.iter().filter(weighted) {
            match ticket.checked_sub(u64::from(*weight)) {
                Some(rest) => ticket = rest,
                None => return model.clone(),
            }
        }
        from[0].0.clone()
    }

    /// The routes, for the startup log: `task → model=weight, …`.
    pub fn describe(&self) -> String {
        (self.0.iter())
            .map(|(task, split)| {
                let models: Vec<String> = split.iter().map(|(m, w)| format!("{m}={w}")).collect();
                format!("{task}:{}", models.join(","))
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ModelName {
        s.parse().unwrap()
    }

    #[test]
    fn unrouted_tasks_run_on_their_default_model() {
        let routes: ModelRoutes = "".parse().unwrap();
        assert_eq!(
            routes.pick(Task::Embed, |_| true).as_str(),
            "all-minilm-l6-v2"
        );
        assert_eq!(
            routes.pick(Task::ClassifyImage, |_| false).as_str(),
            "efficientnet-lite0"
        );
    }

    #[test]
    fn a_split_sends_each_model_its_share() {
        let routes: ModelRoutes = "embed: a=90, b=10 ; similarity:b".parse().unwrap();
        assert_eq!(routes.describe(), "embed:a=90,b=10;similarity:b=1");
        let draws = 10_000;
        let to_b = (0..draws)
            .filter(|_| routes.pick(Task::Embed, |_| true) == name("b"))
            .count();
        // 1000 expected; 5 standard deviations (30 each) either side.
        assert!((850..=1150).contains(&to_b), "b got {to_b} of {draws}");
        assert_eq!(routes.pick(Task::Similarity, |_| true), name("b"));
        assert_eq!(
            routes.pick(Task::Classify, |_| true).as_str(),
            "all-minilm-l6-v2"
        );
    }

    #[test]
    fn a_canary_without_workers_takes_no_traffic() {
        let routes: ModelRoutes = "embed:a=50,b=50".parse().unwrap();
        assert!((0..200).all(|_| routes.pick(Task::Embed, |m| *m == name("a")) == name("a")));
        // Nobody serves either: still one of them, for the no_worker answer.
        let picked = routes.pick(Task::Embed, |_| false);
        assert!(picked == name("a") || picked == name("b"));
        let zero: ModelRoutes = "embed:a=0,b=1".parse().unwrap();
        assert!((0..100).all(|_| zero.pick(Task::Embed, |_| false) == name("b")));
    }

    #[test]
    fn bad_routes_say_what_is_wrong() {
        let error = |s: &str| s.parse::<ModelRoutes>().unwrap_err().0;
        assert_eq!(error("embed"), "\"embed\" names no task before `:`");
        assert!(error("embd:a").starts_with("unknown task \"embd\""));
        assert_eq!(
            error("embed:a=x"),
            "the weight of \"a\" is \"x\": invalid digit found in string"
        );
        assert!(error("embed:a.b").starts_with("model name \"a.b\" is not valid"));
        assert_eq!(
            error("embed:a=0"),
            "embed has no model with a weight above 0"
        );
        assert_eq!(error("embed:a;embed:b"), "embed is routed twice");
    }
}
