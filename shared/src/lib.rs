//! Everything the jetinfer services must agree on, in one crate.
//!
//! The gateway, the workers and the dashboard never talk to each other
//! directly: NATS is the only shared state. What keeps them compatible is
//! this crate, so a subject name or a wire field is defined exactly once.
//!
//! # Layout
//! - [`protocol`]: the MessagePack/JSON types that travel on NATS subjects, one
//!   file per concept under `protocol/`: task vocabulary, batch messages, batch
//!   limits, the MessagePack codec, observability records, text previews.
//! - [`subjects`]: every subject, stream, consumer and bucket name.
//! - [`topology`]: idempotent creation of the streams, consumers and KV buckets.
//! - [`heartbeats`]: which workers are alive now, read from the heartbeat bucket.
//! - [`image`]: an uploaded photo to the 224 × 224 crop image models read (at the gateway).
//! - [`corpus`]: benchmark input texts (1024 built-in sentences, or a JSON file).
//! - [`config`]: command-line/env options every service shares (NATS connection).
//! - [`identity`]: each process's own NATS login, the permissions of each role,
//!   the nats-server `access.conf` made from them, worker identity pools, TLS.
//! - [`keys`]: API and dashboard keys, compared in constant time.
//! - [`exposure`]: protected mode: off loopback only with keys.
//! - [`telemetry`]: tracing setup with a switchable JSON output.
//! - [`metrics`]: the Prometheus recorder behind every `GET /metrics`.
//! - [`serve`]: the HTTP front of the gateway and the dashboard: header and idle
//!   timeouts, a connection cap, graceful shutdown.
//! - [`shutdown`]: the Ctrl-C/SIGTERM signal every binary stops on.
//! - [`store`]: publishing to a stream until it is stored (lost acks, leader elections).
//! - [`dead`]: dead letters, copies of batches that left the work queue unanswered.
//! - [`clock`]: wall-clock milliseconds, the unit deadlines travel in.

pub mod clock;
pub mod config;
pub mod corpus;
pub mod dead;
pub mod exposure;
pub mod heartbeats;
pub mod identity;
pub mod image;
pub mod keys;
pub mod metrics;
pub mod protocol;
pub mod serve;
pub mod shutdown;
pub mod store;
pub mod subjects;
pub mod telemetry;
pub mod topology;
