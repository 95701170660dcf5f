//! Photos to the crops workers compute on: the bytes of a raw upload or of a
//! base64 `input` decoded, resized and cropped
//! ([`jetinfer_shared::image::prepare`]) on tokio's blocking pool, at most as
//! many at once as the machine has cores, so a burst of large photos (a
//! 12-megapixel JPEG takes ~100 ms to decode) waits its turn instead of
//! taking every thread and stalling the rest of the API.

use super::error::ApiError;
use jetinfer_shared::image::{self, ImageError};
use jetinfer_shared::protocol::TaskInput;
use tokio::sync::Semaphore;

/// The gateway's photo decoder.
pub struct Images {
    permits: Semaphore,
}

impl Default for Images {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            permits: Semaphore::new(cores),
        }
    }
}

impl Images {
    /// The `classify_image` input of the photo in `bytes`: 422
    /// `invalid_image` if it does not decode, 413 `image_too_large` past
    /// 8192 pixels a side.
    pub async fn prepare(&self, bytes: Vec<u8>) -> Result<TaskInput, ApiError> {
        let _turn = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        let crop = tokio::task::spawn_blocking(move || image::prepare(&bytes))
            .await
            .map_err(|_| ApiError::ShuttingDown)?
            .map_err(|e| match e {
                ImageError::TooLarge { .. } => ApiError::ImageTooLarge(e.to_string()),
                ImageError::Undecodable(_) | ImageError::Empty { .. } => {
                    ApiError::InvalidImage(e.to_string())
                }
            })?;
        Ok(TaskInput::ClassifyImage { image: crop })
    }
}
