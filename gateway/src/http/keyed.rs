//! The HTTP side of safe retries: the `Idempotency-Key` header, whose
//! namespace a key belongs to, and the mark on a replayed answer. What a key
//! means in the bucket is [`crate::idempotency`]'s business.

use super::error::ApiError;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

/// Request header naming a request for safe retries.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Response header on an answer stored earlier under the request's key.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Longest `Idempotency-Key` accepted; a UUID or a ULID fits many times over.
pub const MAX_KEY_LEN: usize = 255;

/// The schema's form of what [`idempotency_key`] accepts (utoipa takes only a
/// literal, so `/infer`'s annotation spells it again; a test holds the two together).
pub const KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// Whose key space a request's `Idempotency-Key` lives in: put on the request
/// by the API-key check when it accepted a key (the `Authorization` value as
/// sent; it only ever enters a SHA-256), absent when the API is open. Two
/// clients with different API keys never share an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible ASCII
/// characters, sent once. Anything else is a 400, never a key silently dropped.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidIdempotencyKey); // two keys: which one?
    }
    let bytes = value.as_bytes();
    let visible = bytes.iter().all(|b| (b'!'..=b'~').contains(b));
    match (1..=MAX_KEY_LEN).contains(&bytes.len()) && visible {
        true => value
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::InvalidIdempotencyKey),
        false => Err(ApiError::InvalidIdempotencyKey),
    }
}

/// Mark `response` as an answer given before under the same key.
pub fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(values: &[&[u8]]) -> Result<Option<String>, ApiError> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(v).unwrap());
        }
        idempotency_key(&headers).map(|k| k.map(str::to_owned))
    }

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters_sent_once() {
        assert_eq!(key_of(&[]).unwrap(), None);
        for fine in [&b"a"[..], b"order-42/retry:1", b"!~", &[b'k'; MAX_KEY_LEN]] {
            let expected = String::from_utf8(fine.to_vec()).unwrap();
            assert_eq!(key_of(&[fine]).unwrap(), Some(expected));
        }
        for bad in [
            &b""[..],
            b"a b",
            b"tab\there",
            &[b'k'; MAX_KEY_LEN + 1],
            "caf\u{e9}".as_bytes(),
        ] {
            assert!(
                matches!(key_of(&[bad]), Err(ApiError::InvalidIdempotencyKey)),
                "{bad:?}"
            );
        }
        assert!(key_of(&[b"a", b"b"]).is_err(), "two keys");
    }
}
