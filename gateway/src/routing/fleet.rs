//! What live workers serve, as the heartbeat bucket said at the last poll,
//! and the `no_worker` verdict built on it.
//!
//! A request whose model and task no live worker serves is refused at once
//! (503 `no_worker`, naming the model), unless a worker served them within
//! `NO_WORKER_GRACE_MS`, or the gateway started within it: a worker that
//! restarts, or a stack whose workers are still loading their models, should
//! find its requests queued, not refused. A task its model is live without
//! (text embeddings asked of the image model) is refused from the start: a
//! model's tasks are its own, no worker still loading changes them. When the bucket cannot be read
//! (NATS down) nothing is refused here: the publish itself then answers.

use jetinfer_shared::heartbeats;
use jetinfer_shared::protocol::{ModelName, Task};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// No live worker serves a request's model for its task.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no live worker serves model {model} for task {task}{}", serving_note(.task, .serving))]
pub struct NoWorker {
    /// The model the request would run on.
    pub model: ModelName,
    /// Its task.
    pub task: Task,
    /// Models live workers serve the task with now (what the client could name instead).
    pub serving: Vec<String>,
}

fn serving_note(task: &Task, serving: &[String]) -> String {
    if serving.is_empty() {
        format!("; no live worker serves {task} with any model")
    } else {
        format!(
            "; {task} is served now with: {} (name one in `model`)",
            serving.join(", ")
        )
    }
}

/// Cloneable view of the workers' models, refreshed by one background poll.
#[derive(Clone)]
pub struct Fleet {
    view: Arc<RwLock<View>>,
    grace: Duration,
    /// A poll older than this means the bucket is unreadable: verdicts pass.
    stale_after: Duration,
}

struct View {
    /// When the gateway started: the grace runs from here until a worker is seen.
    started: Instant,
    /// The last successful poll.
    polled: Option<Instant>,
    /// (model, task) served by a live worker at the last poll.
    live: BTreeSet<(String, Task)>,
    /// When each (model, task) was last served by a live worker.
    seen: HashMap<(String, Task), Instant>,
}

impl Fleet {
    /// Poll the heartbeats every `interval` until `stop`; a (model, task) no
    /// live worker has served for `grace` (nor since the start, within it) is
    /// refused.
    pub fn spawn(
        js: async_nats::jetstream::Context,
        interval: Duration,
        grace: Duration,
        stop: CancellationToken,
    ) -> Self {
        let fleet = Self::new(grace, interval * 3);
        let polling = fleet.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while stop.run_until_cancelled(tick.tick()).await.is_some() {
                match heartbeats::live(&js).await {
                    Ok(beats) => {
                        polling.observe(beats.iter().filter(|b| b.state != "draining").flat_map(
                            |b| {
                                (b.models.iter())
                                    .flat_map(|m| m.tasks.iter().map(|t| (m.name.clone(), *t)))
                            },
                        ))
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "heartbeats unreadable; not refusing requests for want of workers")
                    }
                }
            }
        });
        fleet
    }

    fn new(grace: Duration, stale_after: Duration) -> Self {
        Self {
            view: Arc::new(RwLock::new(View {
                started: Instant::now(),
                polled: None,
                live: BTreeSet::new(),
                seen: HashMap::new(),
            })),
            grace,
            stale_after,
        }
    }

    /// Record a successful poll: these (model, task) pairs are served now.
    fn observe(&self, served: impl Iterator<Item = (String, Task)>) {
        let now = Instant::now();
        let live: BTreeSet<_> = served.collect();
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        for pair in &live {
            view.seen.insert(pair.clone(), now);
        }
        view.live = live;
        view.polled = Some(now);
    }

    /// Whether a live worker served `model`'s `task` at the last poll.
    pub fn serving(&self, model: &ModelName, task: Task) -> bool {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        view.live.contains(&(model.to_string(), task))
    }

    /// May a request for `model`'s `task` be queued? Refused only when the
    /// last poll is fresh, shows no worker for it, and none was seen (nor the
    /// gateway started) within the grace.
    pub fn check(&self, model: &ModelName, task: Task) -> Result<(), NoWorker> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let fresh = view.polled.is_some_and(|at| now - at <= self.stale_after);
        let key = (model.to_string(), task);
        if !fresh || view.live.contains(&key) {
            return Ok(());
        }
        let model_live = view.live.iter().any(|(m, _)| m == model.as_str());
        match view.seen.get(&key) {
            Some(last) if now - *last < self.grace => return Ok(()),
            // Its model is up and has never computed this task: no worker
            // still loading will change that (a model's tasks are its own).
            None if !model_live && now - view.started < self.grace => return Ok(()),
            _ => {}
        }
        Err(NoWorker {
            model: model.clone(),
            task,
            serving: (view.live.iter())
                .filter(|(_, t)| *t == task)
                .map(|(m, _)| m.clone())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn text() -> ModelName {
        ModelName::default_for(Task::Embed)
    }

    fn served(pairs: &[(&str, Task)]) -> impl Iterator<Item = (String, Task)> {
        pairs
            .iter()
            .map(|(m, t)| (m.to_string(), *t))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_refused_before_the_first_poll_or_within_the_start_grace() {
        let fleet = Fleet::new(GRACE, Duration::from_secs(3));
        assert_eq!(fleet.check(&text(), Task::Embed), Ok(()), "never polled");
        fleet.observe(served(&[("all-minilm-l6-v2", Task::Embed)]));
        let image = ModelName::default_for(Task::ClassifyImage);
        assert_eq!(
            fleet.check(&image, Task::ClassifyImage),
            Ok(()),
            "within the grace"
        );
        assert!(
            fleet.check(&text(), Task::ClassifyImage).is_err(),
            "the text model is up, and it has no photo task"
        );
        tokio::time::advance(GRACE).await;
        fleet.observe(served(&[("other", Task::Embed)]));
        let refused = fleet.check(&text(), Task::Embed).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "no live worker serves model all-minilm-l6-v2 for task embed; embed is served now with: other (name one in `model`)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_gone_is_waited_for_the_grace_then_refused() {
        let fleet = Fleet::new(GRACE, Duration::from_secs(3));
        tokio::time::advance(GRACE * 2).await;
        fleet.observe(served(&[("all-minilm-l6-v2", Task::Embed)]));
        assert!(fleet.serving(&text(), Task::Embed));
        assert_eq!(fleet.check(&text(), Task::Embed), Ok(()));
        let image = ModelName::default_for(Task::ClassifyImage);
        assert!(
            fleet.check(&image, Task::ClassifyImage).is_err(),
            "never served"
        );
        assert!(
            fleet.check(&text(), Task::ClassifyImage).is_err(),
            "the model, but not that task"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        fleet.observe(served(&[]));
        assert_eq!(fleet.check(&text(), Task::Embed), Ok(()), "gone 1 s ago");
        tokio::time::advance(GRACE).await;
        fleet.observe(served(&[]));
        let refused = fleet.check(&text(), Task::Embed).unwrap_err();
        assert!(refused
            .to_string()
            .ends_with("no live worker serves embed with any model"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_bucket_refuses_nothing() {
        let fleet = Fleet::new(GRACE, Duration::from_secs(3));
        tokio::time::advance(GRACE * 2).await;
        fleet.observe(served(&[]));
        assert!(fleet.check(&text(), Task::Embed).is_err());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            fleet.check(&text(), Task::Embed),
            Ok(()),
            "last poll is stale"
        );
    }
}
