//! The stack as the feeds see it, behind one handle: the page's server and
//! `jetinfer-top` each start one and read the same [`Snapshot`] from it, so
//! the terminal and the browser can never disagree on what a number means.

use crate::feed;
use crate::state::{Snapshot, StackState};
use jetinfer_shared::clock::now_ms;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The feeds' state and the connection they read it over.
pub struct Watch {
    stack: Arc<Mutex<StackState>>,
    client: async_nats::Client,
}

impl Watch {
    /// Start every feed on `client` (they end when `stop` fires): `recent`
    /// finished requests kept, a worker dead `ttl` after its last heartbeat.
    pub fn start(
        client: async_nats::Client,
        recent: usize,
        ttl: Duration,
        stop: CancellationToken,
    ) -> Self {
        let stack = Arc::new(Mutex::new(StackState::new(recent, ttl)));
        feed::spawn(client.clone(), stack.clone(), stop);
        Self { stack, client }
    }

    /// The state the feeds write, for a feed started beside them.
    pub fn stack(&self) -> Arc<Mutex<StackState>> {
        self.stack.clone()
    }

    /// What the stack looks like now, with the NATS connection's state.
    pub fn snapshot(&self) -> Snapshot {
        let nats = self.client.connection_state().to_string();
        self.stack
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot(nats, now_ms())
    }
}
