//! Which model a request runs on, and whether any worker can run it.
//!
//! A request that names no model gets its task's route ([`routes`]:
//! `MODEL_ROUTES`, a weighted split for canaries, else the task's default
//! model); the [`fleet`] (the heartbeats, polled) then says whether a live
//! worker serves that model's task, so a request nobody can compute is
//! answered 503 `no_worker` at once instead of waiting out its timeout.

pub mod fleet;
pub mod routes;

pub use fleet::{Fleet, NoWorker};
pub use routes::{ModelRoutes, RoutesError};
