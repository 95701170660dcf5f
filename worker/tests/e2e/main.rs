//! System tests: a real nats-server, the gateway, real workers (in-process and
//! as processes) with the real model, the dashboard in a real browser.
//!
//! One test binary, so the stack harness is compiled and linked once. It lives
//! in the worker package because cargo hands integration tests the path of
//! their own package's binaries only (`CARGO_BIN_EXE_worker`, always rebuilt
//! when stale), and the chaos tests need real worker processes to kill.

mod async_results;
mod bad_input;
mod cache;
mod chaos;
mod compose;
mod dashboard;
mod envelope;
mod front_door;
mod fuzz;
mod head_of_line;
mod idempotency;
mod images;
mod invariants;
mod nats_api;
mod nats_inspect;
mod openai;
mod payload;
mod permissions;
mod pipeline;
mod priority;
mod privacy;
mod routing;
mod slowloris;
mod stack;
mod stopping;
mod tls;
mod top;
