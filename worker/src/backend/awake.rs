//! Keeping a compute pool's threads awake for the length of one forward pass.
//!
//! A forward pass is a few hundred short parallel regions (one per GEMM, per
//! norm, per attention group). Between two passes the pool's threads fall
//! asleep, and on a VM a sleeping vCPU is halted: waking it costs a
//! hypervisor exit, and rayon pays that wake on many of the pass's regions.
//! Measured on a 2-core AVX-512 VM, a lone sentence after 3 ms of idleness
//! took 6.5 ms against 4.5 ms back to back. So for the length of a pass
//! every other pool thread runs a spinner that keeps stealing the pass's
//! work (`rayon::yield_now`) and spins between jobs; it stops when the pass
//! ends, so an idle worker burns nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Run `pass` in the current rayon pool with every other thread of the pool
/// kept awake and stealing until it returns (or unwinds).
pub fn while_awake<R>(pass: impl FnOnce() -> R) -> R {
    let others = rayon::current_num_threads().saturating_sub(1);
    if others == 0 {
        return pass();
    }
    let caller = rayon::current_thread_index();
    let running = Running(Arc::new(AtomicBool::new(true)));
    for _ in 0..others {
        let running = Arc::clone(&running.0);
        rayon::spawn(move || {
            // The caller may pop a spinner off its own deque while it waits
            // inside the pass; spinning there would wait for itself.
            if rayon::current_thread_index() == caller {
                return;
            }
            while running.load(Ordering::Acquire) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::hint::spin_loop();
                }
            }
        });
    }
    pass()
}

/// Ends the spinners when the pass returns or unwinds.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn a_pass_runs_with_the_pool_awake_and_the_spinners_then_stop() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            for n in [0u64, 1, 10_000] {
                let sum = while_awake(|| (0..n).into_par_iter().sum::<u64>());
                assert_eq!(sum, n * n.saturating_sub(1) / 2);
            }
            // A spinner still running would hold its thread, and a broadcast
            // needs every thread of the pool.
            assert_eq!(rayon::broadcast(|_| 1).len(), 3);
        });
        let panicked =
            pool.install(|| std::panic::catch_unwind(|| while_awake(|| panic!("a failing pass"))));
        assert!(panicked.is_err());
        assert_eq!(pool.broadcast(|_| 1).len(), 3);
    }
}
