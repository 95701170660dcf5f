//! Logged-in browsers. A login hands out a random token (the session
//! cookie's value), never the key itself, so a cookie that leaks dies with
//! its session and a logout or an expiry really ends it.
//!
//! Only the SHA-256 of each token is kept: the map lookup then reveals
//! nothing usable through its timing, and a memory dump holds no cookie.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sessions held at once. A key holder scripting logins in a loop would
/// otherwise grow the map without bound: when it is full, expired sessions
/// are swept, and if none had expired the oldest is dropped.
const MOST_SESSIONS: usize = 10_000;

/// What a session is known by: the SHA-256 of its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 32]);

impl SessionId {
    fn of(token: &str) -> Self {
        SessionId(Sha256::digest(token.as_bytes()).into())
    }
}

/// Every live session, with the instant it expires.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    live: Mutex<HashMap<SessionId, Instant>>,
}

impl Sessions {
    /// No sessions yet; each will last `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// How long a new session lasts (the cookie's `Max-Age`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Instant>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open a session at `now`; returns its token: 256 random bits in hex.
    pub fn open(&self, now: Instant) -> String {
        let bytes: [u8; 32] = rand::random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut live = self.live();
        if live.len() >= MOST_SESSIONS {
            live.retain(|_, expires| *expires > now);
        }
        if live.len() >= MOST_SESSIONS {
            if let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(id, _)| *id) {
                live.remove(&oldest);
            }
        }
        live.insert(SessionId::of(&token), now + self.ttl);
        token
    }

    /// The session `token` names, if it is live at `now`.
    pub fn find(&self, token: &str, now: Instant) -> Option<SessionId> {
        let id = SessionId::of(token);
        self.is_live(id, now).then_some(id)
    }

    /// Whether session `id` is still live at `now` (not expired, not closed).
    pub fn is_live(&self, id: SessionId, now: Instant) -> bool {
        self.live().get(&id).is_some_and(|expires| *expires > now)
    }

    /// End the session `token` names (a logout); unknown tokens are ignored.
    pub fn close(&self, token: &str) {
        self.live().remove(&SessionId::of(token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_it_expires_or_is_closed() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let token = sessions.open(t0);
        assert_eq!(token.len(), 64);
        let id = sessions.find(&token, t0).expect("live right after login");
        assert!(sessions.is_live(id, t0 + Duration::from_secs(59)));
        assert!(
            !sessions.is_live(id, t0 + Duration::from_secs(60)),
            "expired"
        );
        assert!(sessions.find("not-a-token", t0).is_none());
        assert_ne!(sessions.open(t0), token, "every login gets its own token");

        sessions.close(&token);
        assert!(sessions.find(&token, t0).is_none(), "logged out");
    }

    #[test]
    fn a_full_table_drops_expired_sessions_then_the_oldest() {
        let sessions = Sessions::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..MOST_SESSIONS {
            sessions.open(t0);
        }
        sessions.open(t0 + Duration::from_secs(2));
        assert_eq!(sessions.live().len(), 1, "the expired ones went");

        let sessions = Sessions::new(Duration::from_secs(3600));
        let first = sessions.open(t0);
        let second = sessions.open(t0 + Duration::from_millis(1));
        for _ in 2..MOST_SESSIONS {
            sessions.open(t0 + Duration::from_millis(2));
        }
        sessions.open(t0 + Duration::from_millis(3));
        assert_eq!(sessions.live().len(), MOST_SESSIONS);
        assert!(sessions.find(&first, t0).is_none(), "the oldest made room");
        assert!(sessions.find(&second, t0).is_some());
    }
}
