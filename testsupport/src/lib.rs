//! Dev-only test support: a real `nats-server` per test, the real model folder,
//! and bounded waiting.
//!
//! Like async-nats' own harness, each [`NatsServer`] runs on a free port (`-p -1`)
//! with its own store dir, reads the chosen port back from the ports file, and
//! is killed and cleaned up on `Drop`, so tests run in parallel. It can also be
//! restarted on the same store, for fault tests.
//!
//! Missing dependencies are loud failures, never skips: a test that silently
//! does nothing would pass in CI while proving nothing.
//!
//! # Layout
//!
//! - `paths.rs`: where things are: [`repo_nats_conf`], [`nats_server_bin`],
//!   [`schemathesis_bin`], [`client_python`], [`tmux_bin`], [`model_dir`].
//! - `nats_server.rs`: [`NatsServer`], one server per test (or a routed
//!   cluster of them, [`NatsServer::start_cluster`]), with the
//!   identities that log in to it (made on first use).
//! - `worker_process.rs`: [`WorkerProcess`], a real worker binary to kill.
//! - `gateway_process.rs`: [`GatewayProcess`], a real gateway binary to kill.
//! - `wait.rs`: [`wait_for`], polling state within a time bound.
//! - `cut_proxy.rs`: [`CutProxy`], a TCP proxy whose connections a test can cut.
//! - `port.rs`: [`free_port`], for listen addresses a child must be told.

mod cut_proxy;
mod gateway_process;
mod nats_server;
mod paths;
mod port;
mod wait;
mod worker_process;

pub use cut_proxy::CutProxy;
pub use gateway_process::GatewayProcess;
pub use nats_server::NatsServer;
pub use paths::{
    client_python, image_model_dir, model_dir, nats_server_bin, photo, png_header, repo_nats_conf,
    schemathesis_bin, tmux_bin,
};
pub use port::free_port;
pub use wait::{three_current_copies, wait_for};
pub use worker_process::WorkerProcess;
