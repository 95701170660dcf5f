//! Integration tests against a real nats-server, real workers and the real model.
//! One test binary, so the stack harness is compiled and linked once.

mod bad_input;
mod chaos;
mod compose;
mod pipeline;
mod stack;
