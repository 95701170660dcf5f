//! The MessagePack codec for task and result payloads.
//!
//! Named fields (`to_vec_named`) rather than positional arrays: a field added
//! later does not shift the others, and `nats sub` shows readable keys.

use serde::{Deserialize, Serialize};

/// A task or result payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Encoding failed (practically only on a bug in a `Serialize` impl).
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes are not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// Encode a wire value as MessagePack with field names.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decode a wire value from MessagePack.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, WireError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TaskBatch;

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(matches!(
            decode::<TaskBatch>(b"\xc1garbage"),
            Err(WireError::Decode(_))
        ));
    }
}
