//! The answer cache: a request identical to one answered within
//! `CACHE_TTL_S` (same model, task and validated input; priority aside) is
//! answered from here, without touching the queue, and says `"cached": true`.
//!
//! In-process and bounded (`CACHE_MAX_ENTRIES`, least recently used out
//! first), so a hit costs a hash and a lock, not a NATS round trip; why not
//! a KV bucket shared by gateways is in docs/ARCHITECTURE.md. Only computed
//! outputs are kept, never errors; echo (which measures the pipeline) never.

use jetinfer_shared::protocol::{answer_key, ModelName, Task, TaskInput, TaskOutput};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use tokio::time::{Duration, Instant};

/// Where a request's answer is kept: [`answer_key`] of its model and input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

/// A computed answer as it is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The output.
    pub output: TaskOutput,
    /// The model that computed it.
    pub model: String,
    /// The worker that computed it.
    pub worker_id: String,
}

/// Answers by key, each with when it was kept.
type Entries = LruCache<[u8; 32], (Instant, Cached)>;

/// The cache; `None` inside when `CACHE_TTL_S=0` or `CACHE_MAX_ENTRIES=0`.
pub struct AnswerCache {
    entries: Option<Mutex<Entries>>,
    ttl: Duration,
}

impl AnswerCache {
    /// Keep at most `max_entries` answers for `ttl` each; either 0 turns it off.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        let entries = match (ttl.is_zero(), NonZeroUsize::new(max_entries)) {
            (false, Some(max)) => Some(Mutex::new(LruCache::new(max))),
            _ => None,
        };
        Self { entries, ttl }
    }

    /// The key of `input` on `model`; `None` when the cache is off or the
    /// task is never cached. Taken before the input goes to the queue.
    pub fn key(&self, model: &ModelName, input: &TaskInput) -> Option<Key> {
        (self.entries.is_some() && cacheable(input)).then(|| Key(answer_key(model, input)))
    }

    /// The answer kept under `key`, if it is younger than the TTL.
    pub fn get(&self, key: &Key) -> Option<Cached> {
        let entries = self.entries.as_ref()?;
        let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
        let found = match entries.get(&key.0) {
            Some((at, cached)) if at.elapsed() < self.ttl => Some(cached.clone()),
            Some(_) => {
                entries.pop(&key.0);
                None
            }
            None => None,
        };
        crate::metrics::cache(found.is_some());
        found
    }

    /// Keep `cached`, the answer just computed for the request of `key`.
    pub fn put(&self, key: Key, cached: Cached) {
        if let Some(entries) = &self.entries {
            let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.put(key.0, (Instant::now(), cached));
        }
    }
}

/// Echo is never cached: it is there to measure the pipeline.
fn cacheable(input: &TaskInput) -> bool {
    input.task() != Task::Echo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embed(text: &str) -> TaskInput {
        TaskInput::Embed { text: text.into() }
    }

    fn answer(v: f32) -> Cached {
        Cached {
            output: TaskOutput::Embedding { embedding: vec![v] },
            model: "m".into(),
            worker_id: "w".into(),
        }
    }

    fn text() -> ModelName {
        ModelName::default_for(Task::Embed)
    }

    /// `input` on `model` kept as `cached`, as a handler does.
    fn put(cache: &AnswerCache, model: &ModelName, input: &TaskInput, cached: Cached) {
        if let Some(key) = cache.key(model, input) {
            cache.put(key, cached);
        }
    }

    fn get(cache: &AnswerCache, model: &ModelName, input: &TaskInput) -> Option<Cached> {
        cache.get(&cache.key(model, input)?)
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_kept_for_its_ttl_per_model_and_input() {
        let cache = AnswerCache::new(Duration::from_secs(60), 10);
        assert_eq!(get(&cache, &text(), &embed("a")), None);
        put(&cache, &text(), &embed("a"), answer(1.0));
        assert_eq!(get(&cache, &text(), &embed("a")), Some(answer(1.0)));
        assert_eq!(get(&cache, &text(), &embed("b")), None, "another input");
        let other: ModelName = "other".parse().unwrap();
        assert_eq!(get(&cache, &other, &embed("a")), None, "another model");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(get(&cache, &text(), &embed("a")), None, "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_answer_goes_first() {
        let cache = AnswerCache::new(Duration::from_secs(60), 2);
        put(&cache, &text(), &embed("a"), answer(1.0));
        put(&cache, &text(), &embed("b"), answer(2.0));
        assert!(get(&cache, &text(), &embed("a")).is_some());
        put(&cache, &text(), &embed("c"), answer(3.0));
        assert_eq!(
            get(&cache, &text(), &embed("b")),
            None,
            "b was used least recently"
        );
        assert!(get(&cache, &text(), &embed("a")).is_some());
    }

    #[test]
    fn a_zero_ttl_or_size_and_echo_are_never_cached() {
        for cache in [
            AnswerCache::new(Duration::ZERO, 10),
            AnswerCache::new(Duration::from_secs(60), 0),
        ] {
            put(&cache, &text(), &embed("a"), answer(1.0));
            assert_eq!(get(&cache, &text(), &embed("a")), None);
        }
        let cache = AnswerCache::new(Duration::from_secs(60), 10);
        let echo = TaskInput::Echo { text: "a".into() };
        let model = ModelName::default_for(Task::Echo);
        put(&cache, &model, &echo, answer(1.0));
        assert_eq!(get(&cache, &model, &echo), None);
    }
}
