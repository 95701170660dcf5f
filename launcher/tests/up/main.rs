//! The real launcher binary, as `./jetinfer up` runs it, on free ports with a
//! temporary state folder: what it listens on, who it refuses, and how it
//! brings back a child that dies.
//!
//! It starts the `worker`, `gateway` and `dashboard` binaries found next to
//! itself (`target/debug`). `cargo test --workspace` (CI, `./jetinfer test`)
//! builds them first; `cargo test -p jetinfer-launcher` alone does not, so
//! run `cargo build --bins` before it — the harness fails, naming that
//! command, when one is missing (a stale one is run as it is).

mod cluster;
mod compose_init;
mod harness;
mod identities;
mod listen;
mod supervision;
