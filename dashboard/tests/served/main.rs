//! The dashboard served for real, over HTTP, fed by a real nats-server with
//! our `nats.conf`, but without gateway or workers (those are the system
//! tests' business, `worker/tests/e2e/dashboard.rs`): who may look, and what
//! it says about request text.

mod access;
mod harness;
mod inputs;
