//! The dedicated compute thread that owns the model.
//!
//! Candle's forward pass is CPU-bound and synchronous; running it on a tokio
//! worker would stall heartbeats and acks. The model lives on its own OS
//! thread inside a rayon pool sized by `--threads`, and async code sends it
//! jobs through a channel, each with its own oneshot reply.

use super::{BackendError, Embedder};
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, BackendError>>;

/// The rayon pool a model computes in: `threads` threads (at least one),
/// named so they are recognisable in `top` and profiles.
pub fn compute_pool(threads: usize) -> Result<rayon::ThreadPool, BackendError> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("jetinfer-compute-{i}"))
        .build()?)
}

/// Cloneable async handle to the compute thread.
#[derive(Clone)]
pub struct BackendThread {
    jobs: mpsc::Sender<(Vec<String>, Reply)>,
    model: String,
}

impl BackendThread {
    /// Move `embedder` onto a new thread that computes with `threads` threads.
    /// The thread ends when every handle is dropped.
    pub fn spawn(embedder: Box<dyn Embedder>, threads: usize) -> Result<Self, BackendError> {
        let pool = compute_pool(threads)?;
        let model = embedder.model_name().to_owned();
        let (jobs, mut rx) = mpsc::channel::<(Vec<String>, Reply)>(16);
        std::thread::Builder::new()
            .name("jetinfer-backend".into())
            .spawn(move || {
                pool.install(move || {
                    while let Some((texts, reply)) = rx.blocking_recv() {
                        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                        // The requester may have given up; nothing to do then.
                        let _ = reply.send(embedder.embed(&refs));
                    }
                })
            })
            .map_err(|_| BackendError::Stopped)?;
        Ok(Self { jobs, model })
    }

    /// Name of the served model.
    pub fn model_name(&self) -> &str {
        &self.model
    }

    /// Embed `texts` in one forward pass on the compute thread.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((texts, tx))
            .await
            .map_err(|_| BackendError::Stopped)?;
        rx.await.map_err(|_| BackendError::Stopped)?
    }
}
