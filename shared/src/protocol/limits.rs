//! How big a batch a worker agrees to compute.
//!
//! The gateway never sends more than this, but anyone with publish rights on
//! a task subject can: these limits let a worker terminate a hand-made batch
//! instead of spending minutes (or all its memory) on it.

use super::batch::TaskBatch;
use super::task::{Task, TaskInput};
use crate::image::CROP_SIDE;
use uuid::Uuid;

/// Most requests a worker accepts in one batch (the gateway's `BATCH_MAX_SIZE` ceiling).
pub const MAX_BATCH_ITEMS: usize = 1024;
/// Most texts in one request (query + candidates, text + labels).
pub const MAX_ITEM_TEXTS: usize = 4096;
/// Longest text a worker tokenizes, in bytes. The gateway's own limit is far
/// lower; this one only stops a hand-made message from stalling a worker.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

/// Room a task or result message keeps for what surrounds its items (the
/// batch fields and the headers), so the items never take it past the
/// server's `max_payload` and the server never refuses it (closing the
/// sender's connection).
pub const ENVELOPE_BYTES: usize = 1024;

/// Bytes of items one message may carry on a server whose `max_payload` is
/// `max_payload`: the gateway cuts task batches at it, workers split results at it.
pub fn item_budget(max_payload: usize) -> usize {
    max_payload.saturating_sub(ENVELOPE_BYTES)
}

/// Why [`TaskBatch::check_limits`] refused a batch; the text is what the
/// worker logs and reports on the terminated message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// More than [`MAX_BATCH_ITEMS`] requests.
    #[error("batch of {0} requests exceeds the {max} a worker accepts", max = MAX_BATCH_ITEMS)]
    TooManyItems(usize),
    /// A request whose input belongs to another task than the batch's.
    #[error("request {request_id} is a {item_task} request in a {batch_task} batch")]
    WrongTask {
        /// The offending request.
        request_id: Uuid,
        /// The task its input is for.
        item_task: Task,
        /// The task of the batch it came in.
        batch_task: Task,
    },
    /// A request with more than [`MAX_ITEM_TEXTS`] texts.
    #[error("request {request_id} carries {count} texts; the limit is {max}", max = MAX_ITEM_TEXTS)]
    TooManyTexts {
        /// The offending request.
        request_id: Uuid,
        /// Texts it carries.
        count: usize,
    },
    /// A request with a text longer than [`MAX_TEXT_BYTES`].
    #[error("request {request_id} has a text of {bytes} bytes; the limit is {max}", max = MAX_TEXT_BYTES)]
    TextTooLong {
        /// The offending request.
        request_id: Uuid,
        /// Length of its first text over the limit.
        bytes: usize,
    },
    /// An image that is not the crop the gateway makes (224 × 224 RGB).
    #[error("request {request_id} carries an image of side {side} in {bytes} bytes; a worker takes {CROP_SIDE} x {CROP_SIDE} RGB ({} bytes)", 3 * CROP_SIDE * CROP_SIDE)]
    BadImage {
        /// The offending request.
        request_id: Uuid,
        /// The side it claims.
        side: u32,
        /// The pixel bytes it carries.
        bytes: usize,
    },
}

impl TaskBatch {
    /// Refuse a batch no gateway would send: too many items, a text too long,
    /// or an item of another task. A worker terminates such a batch instead of
    /// spending minutes (or all its memory) on it.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        if self.items.len() > MAX_BATCH_ITEMS {
            return Err(LimitError::TooManyItems(self.items.len()));
        }
        for item in &self.items {
            let request_id = item.request_id;
            if item.input.task() != self.task {
                return Err(LimitError::WrongTask {
                    request_id,
                    item_task: item.input.task(),
                    batch_task: self.task,
                });
            }
            let texts = item.input.texts();
            if texts.len() > MAX_ITEM_TEXTS {
                return Err(LimitError::TooManyTexts {
                    request_id,
                    count: texts.len(),
                });
            }
            if let Some(long) = texts.iter().find(|t| t.len() > MAX_TEXT_BYTES) {
                return Err(LimitError::TextTooLong {
                    request_id,
                    bytes: long.len(),
                });
            }
            if let TaskInput::ClassifyImage { image } = &item.input {
                if !image.is_well_formed() {
                    return Err(LimitError::BadImage {
                        request_id,
                        side: image.side,
                        bytes: image.rgb.len(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BatchItem, Priority, TaskInput};

    #[test]
    fn refusals_name_the_request_and_the_limit() {
        let request_id = Uuid::nil();
        let batch = |input| TaskBatch {
            batch_id: Uuid::nil(),
            model: crate::protocol::ModelName::default_for(Task::Embed),
            task: Task::Embed,
            priority: Priority::Normal,
            reply_subject: "r".into(),
            deadline_ms: 0,
            items: vec![BatchItem {
                request_id,
                input,
                idempotency: None,
                deferred: None,
            }],
        };
        let fine = batch(TaskInput::Embed { text: "ok".into() });
        assert_eq!(fine.check_limits(), Ok(()));
        let echo = batch(TaskInput::Echo { text: "ok".into() });
        assert_eq!(
            echo.check_limits().unwrap_err().to_string(),
            format!("request {request_id} is a echo request in a embed batch")
        );
        let long = batch(TaskInput::Embed {
            text: "x".repeat(MAX_TEXT_BYTES + 1),
        });
        assert_eq!(
            long.check_limits().unwrap_err().to_string(),
            format!("request {request_id} has a text of 262145 bytes; the limit is 262144")
        );
        let image = |side, bytes| TaskBatch {
            task: Task::ClassifyImage,
            ..batch(TaskInput::ClassifyImage {
                image: crate::image::ImageCrop {
                    side,
                    rgb: vec![7; bytes],
                },
            })
        };
        assert_eq!(image(224, 3 * 224 * 224).check_limits(), Ok(()));
        assert_eq!(
            image(224, 3).check_limits().unwrap_err().to_string(),
            format!("request {request_id} carries an image of side 224 in 3 bytes; a worker takes 224 x 224 RGB (150528 bytes)")
        );
        assert!(image(1 << 20, 3 * 224 * 224).check_limits().is_err());
    }
}
