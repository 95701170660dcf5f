//! The configured keys (the gateway's `API_KEYS`, the dashboard's
//! `DASHBOARD_KEYS`), and the one way a presented key is checked against
//! them: in constant time.

use crate::config::Secret;
use axum::http::{header, HeaderMap};

/// Keys that open a server; empty means it is open.
#[derive(Debug, Default)]
pub struct Keys(Vec<Secret>);

impl Keys {
    /// Keep the non-empty keys (`API_KEYS=""` means none; an empty key would
    /// let an empty guess in).
    pub fn new(keys: Vec<Secret>) -> Self {
        Keys(
            keys.into_iter()
                .filter(|k| !k.expose().is_empty())
                .collect(),
        )
    }

    /// Whether any key is required.
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Does `guess` match a key? Every key is compared, each in constant time,
    /// so the response time does not tell how much of a guess was right or
    /// which key it was close to.
    pub fn accepts(&self, guess: &str) -> bool {
        self.0.iter().fold(false, |found, key| {
            found | constant_time_eq(key.expose().as_bytes(), guess.as_bytes())
        })
    }

    /// Does the request carry `Authorization: Bearer <a key>`?
    pub fn accepts_bearer(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|token| self.accepts(token.trim()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_non_empty_keys_match() {
        let keys = Keys::new(vec!["alpha".parse().unwrap(), "".parse().unwrap()]);
        assert!(keys.enabled());
        assert!(keys.accepts("alpha"));
        assert!(!keys.accepts("alph"));
        assert!(!keys.accepts("alphaa"));
        assert!(!keys.accepts("Alpha"));
        assert!(!keys.accepts(""));
        assert!(!Keys::new(vec!["".parse().unwrap()]).enabled());
        let two = Keys::new(vec!["a1".parse().unwrap(), "b2".parse().unwrap()]);
        assert!(two.accepts("a1") && two.accepts("b2"));
    }
}
