//! `worker bench --images DIR`: raw in-process throughput of the image model
//! (EfficientNet-Lite0) on real photos, and what the gateway pays per photo
//! to decode and crop it, in one run.
//!
//! The photos (every PNG and JPEG in the folder) are cropped once as the
//! gateway does ([`jetinfer_shared::image::prepare`], timed per photo), then
//! classified in batches of each size, 64 images per size after a warm-up
//! batch, inside a rayon pool of `--threads` threads, as a worker computes.

use crate::backend::thread::TOP_CLASSES;
use crate::backend::vision::efficientnet::EfficientNetLite0;
use crate::backend::vision::preprocess;
use crate::backend::{thread, BackendError};
use candle_core::Device;
use jetinfer_shared::image::{self, ImageCrop};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Images classified per batch size.
const IMAGES_PER_SIZE: usize = 64;

/// Why the image benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ImageBenchError {
    /// The model failed to load or compute.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The photo folder could not be read, or holds no photo.
    #[error("photos in {dir}: {reason}")]
    Photos {
        /// `--images`.
        dir: String,
        /// What went wrong.
        reason: String,
    },
}

/// The image model at one batch size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ImageRow {
    /// Images per forward pass.
    pub batch_size: usize,
    /// Images classified per second.
    pub images_per_s: f64,
    /// Mean wall time of one image (one pass ÷ its images).
    pub ms_per_image: f64,
}

/// What the run measured: the photos, their preparation, each batch size.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// Photos found.
    pub photos: usize,
    /// Mean gateway-side decode + resize + crop per photo, in milliseconds.
    pub prepare_ms: f64,
    /// One row per batch size.
    pub rows: Vec<ImageRow>,
}

/// Crop every PNG and JPEG directly in `dir`, timing it, then classify them
/// (cycled) at each of `batch_sizes` with the model in `model_dir`.
pub fn measure(
    model_dir: &Path,
    dir: &Path,
    batch_sizes: &[usize],
    threads: usize,
) -> Result<ImageReport, ImageBenchError> {
    let photos_error = |reason: String| ImageBenchError::Photos {
        dir: dir.display().to_string(),
        reason,
    };
    let files = image::photo_files(dir).map_err(|e| photos_error(e.to_string()))?;
    let started = Instant::now();
    let crops = files
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).map_err(|e| photos_error(e.to_string()))?;
            image::prepare(&bytes).map_err(|e| photos_error(format!("{}: {e}", path.display())))
        })
        .collect::<Result<Vec<ImageCrop>, _>>()?;
    if crops.is_empty() {
        return Err(photos_error("no .png or .jpg files".into()));
    }
    let prepare_ms = started.elapsed().as_secs_f64() * 1000.0 / crops.len() as f64;
    let model = EfficientNetLite0::load(model_dir, &Device::Cpu)?;
    let pool = thread::compute_pool(threads)?;
    let rows = pool.install(|| {
        batch_sizes
            .iter()
            .map(|&b| at_batch(&model, &crops, b.max(1)))
            .collect::<Result<Vec<_>, BackendError>>()
    })?;
    Ok(ImageReport {
        photos: crops.len(),
        prepare_ms,
        rows,
    })
}

/// [`IMAGES_PER_SIZE`] images (at least one batch) in batches of `batch`.
fn at_batch(
    model: &EfficientNetLite0,
    crops: &[ImageCrop],
    batch: usize,
) -> Result<ImageRow, BackendError> {
    let cycle: Vec<&ImageCrop> = crops
        .iter()
        .cycle()
        .take(IMAGES_PER_SIZE.max(batch))
        .collect();
    let pass = |images: &[&ImageCrop]| -> Result<(), BackendError> {
        let x = preprocess::batch(images, &Device::Cpu)?;
        model.classify(&x, TOP_CLASSES)?;
        Ok(())
    };
    pass(&cycle[..batch])?;
    let started = Instant::now();
    for chunk in cycle.chunks(batch) {
        pass(chunk)?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(ImageRow {
        batch_size: batch,
        images_per_s: cycle.len() as f64 / secs,
        ms_per_image: secs * 1000.0 / cycle.len() as f64,
    })
}

/// The human-readable table.
pub fn table(report: &ImageReport, threads: usize) -> String {
    let mut out = format!(
        "EfficientNet-Lite0, {} photos, {threads} thread(s), CPU {}\n\
         gateway decode + crop: {:.2} ms per photo\n\
         batch   images/s   ms/image\n",
        report.photos,
        super::cpu(),
        report.prepare_ms
    );
    for r in &report.rows {
        out += &format!(
            "{:>5}   {:>8.1}   {:>8.2}\n",
            r.batch_size, r.images_per_s, r.ms_per_image
        );
    }
    out
}
