//! Request counters since start, shown by `GET /status` (as `gateway`) and
//! published every second for the dashboard (`infer.event.<id>.stats`).
//! Prometheus keeps its own series (`metrics`); both are fed by `report`.

use jetinfer_shared::protocol::GatewayStats;
use std::sync::atomic::{AtomicU64, Ordering};

/// Request counters since start; lock-free, shared by handlers and the result router.
#[derive(Debug, Default)]
pub struct Counters {
    submitted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    timed_out: AtomicU64,
    rejected: AtomicU64,
    duplicates_dropped: AtomicU64,
    client_gone: AtomicU64,
}

macro_rules! bump {
    ($($name:ident => $field:ident),* $(,)?) => {
        impl Counters {
            $(
                #[doc = concat!("Count one `", stringify!($field), "` event.")]
                pub fn $name(&self) {
                    self.$field.fetch_add(1, Ordering::Relaxed);
                }
            )*
        }
    };
}

bump! {
    submitted => submitted,
    completed => completed,
    failed => failed,
    retried => retried,
    timed_out => timed_out,
    rejected => rejected,
    duplicate => duplicates_dropped,
    client_gone => client_gone,
}

impl Counters {
    /// Read every counter.
    pub fn snapshot(&self) -> GatewayStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GatewayStats {
            submitted: get(&self.submitted),
            completed: get(&self.completed),
            failed: get(&self.failed),
            retried: get(&self.retried),
            timed_out: get(&self.timed_out),
            rejected: get(&self.rejected),
            duplicates_dropped: get(&self.duplicates_dropped),
            client_gone: get(&self.client_gone),
        }
    }
}
