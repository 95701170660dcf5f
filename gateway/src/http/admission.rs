//! The admission limit `MAX_IN_FLIGHT`: how many requests this gateway holds
//! at once, from validation to answer. Above it a request is shed with 429
//! before it costs anything downstream.

use super::error::ApiError;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One slot per request the gateway may hold.
pub struct Admission {
    slots: Arc<Semaphore>,
    limit: u32,
}

impl Admission {
    /// `limit` slots (`MAX_IN_FLIGHT`).
    pub fn new(limit: u32) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit as usize)),
            limit,
        }
    }

    /// Take a slot for one request; it is freed when the returned permit is
    /// dropped, however the handler ends.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded(self.limit))
    }

    /// Take `n` slots at once, for a call that queues `n` requests
    /// (`/v1/embeddings` with an array): all of them or none.
    pub fn admit_many(&self, n: u32) -> Result<OwnedSemaphorePermit, ApiError> {
        self.slots
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| ApiError::Overloaded(self.limit))
    }

    /// Requests holding a slot now.
    pub fn admitted(&self) -> usize {
        self.limit as usize - self.slots.available_permits()
    }
}
