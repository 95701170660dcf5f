//! Wall-clock time in Unix milliseconds.
//!
//! Deadlines and heartbeat timestamps cross process boundaries, so they are
//! expressed in wall-clock time rather than `Instant`, which is per-process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
