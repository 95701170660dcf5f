//! The dedicated compute thread that owns the models.
//!
//! Candle's forward pass is CPU-bound and synchronous; running it on a tokio
//! worker would stall heartbeats and acks. The models live on their own OS
//! thread inside a rayon pool sized by `--threads` (one pool for all of them:
//! a worker computes one pass at a time), and async code sends it jobs
//! through a channel, each with its own oneshot reply.

use super::vision::efficientnet::EfficientNetLite0;
use super::vision::preprocess;
use super::{BackendError, Embedded, Embedder};
use jetinfer_shared::image::ImageCrop;
use jetinfer_shared::protocol::ScoredClass;
use tokio::sync::{mpsc, oneshot};

/// Classes in an image answer.
pub const TOP_CLASSES: usize = 5;

/// The models one worker serves, loaded.
pub struct Loaded {
    /// The sentence-embedding model, when served.
    pub text: Option<Box<dyn Embedder>>,
    /// The image classifier, when served.
    pub image: Option<EfficientNetLite0>,
}

/// Work for the compute thread, with where its answer goes.
enum Job {
    Embed(Vec<String>, oneshot::Sender<Result<Embedded, BackendError>>),
    Classify(
        Vec<ImageCrop>,
        oneshot::Sender<Result<Vec<Vec<ScoredClass>>, BackendError>>,
    ),
}

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
    jobs: mpsc::Sender<Job>,
}

impl BackendThread {
    /// Move `models` onto a new thread that computes with `threads` threads.
    /// The thread ends when every handle is dropped.
    pub fn spawn(models: Loaded, threads: usize) -> Result<Self, BackendError> {
        let pool = compute_pool(threads)?;
        let (jobs, mut rx) = mpsc::channel::<Job>(16);
        std::thread::Builder::new()
            .name("jetinfer-backend".into())
            .spawn(move || {
                pool.install(move || {
                    // The requester may have given up; nothing to do then.
                    while let Some(job) = rx.blocking_recv() {
                        match job {
                            Job::Embed(texts, reply) => {
                                let _ = reply.send(embed(&models, &texts));
                            }
                            Job::Classify(images, reply) => {
                                let _ = reply.send(classify(&models, &images));
                            }
                        }
                    }
                })
            })
            .map_err(|_| BackendError::Stopped)?;
        Ok(Self { jobs })
    }

    /// Embed `texts` in one forward pass on the compute thread.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embedded, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Embed(texts, tx)).await?;
        rx.await.map_err(|_| BackendError::Stopped)?
    }

    /// The [`TOP_CLASSES`] likeliest classes of each image, in one forward pass.
    pub async fn classify(
        &self,
        images: Vec<ImageCrop>,
    ) -> Result<Vec<Vec<ScoredClass>>, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Classify(images, tx)).await?;
        rx.await.map_err(|_| BackendError::Stopped)?
    }

    async fn send(&self, job: Job) -> Result<(), BackendError> {
        self.jobs.send(job).await.map_err(|_| BackendError::Stopped)
    }
}

fn embed(models: &Loaded, texts: &[String]) -> Result<Embedded, BackendError> {
    let model = models
        .text
        .as_ref()
        .ok_or(BackendError::NotServed("text"))?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    model.embed_counted(&refs)
}

fn classify(models: &Loaded, images: &[ImageCrop]) -> Result<Vec<Vec<ScoredClass>>, BackendError> {
    let model = models
        .image
        .as_ref()
        .ok_or(BackendError::NotServed("image"))?;
    let crops: Vec<&ImageCrop> = images.iter().collect();
    let x = preprocess::batch(&crops, &candle_core::Device::Cpu)?;
    Ok(model.classify(&x, TOP_CLASSES)?)
}
