//! loadgen: traffic against a jetinfer gateway, with a report you can trust.
//!
//! # Layout
//! - [`traffic`]: patterns (burst, sustained, poisson, mixed, closed) and the task mix.
//! - [`client`]: one request and its [`client::Record`].
//! - [`run`]: executing a plan, with per-request lines or a progress bar.
//! - [`report`]: summary, percentiles, JSON output.
//! - [`plots`]: PNG charts.
//! - [`bench`]: raw model vs end to end vs pipeline overhead, in one run.
//! - [`trivial`]: a do-nothing `/infer` handler, the overhead baseline.

pub mod bench;
pub mod client;
pub mod plots;
pub mod report;
pub mod run;
pub mod traffic;
pub mod trivial;
