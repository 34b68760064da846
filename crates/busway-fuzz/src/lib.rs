//! # busway-fuzz
//!
//! One function per decoder that reads bytes a broker or a peer controls, each taking raw fuzz
//! input and checking invariants beyond "does not panic" where there are some (a decoded message
//! is valid; encoding what was decoded and decoding it again gives the same message). Two
//! engines run them:
//!
//! - `fuzz/` at the workspace root: cargo-fuzz (libFuzzer), for long runs
//!   (`cargo fuzz run <target>`);
//! - [`bounded`]: a small mutation fuzzer on the stable toolchain, which `scripts/test` runs for
//!   a bounded time on every target (`tests/bounded.rs`).

pub mod bounded;
pub mod targets;

/// A fuzz target: raw input in, panic on a violated invariant.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `fuzz/fuzz_targets/*.rs`).
pub const TARGETS: &[(&str, Target)] = &[
    ("cloudevents_binary", targets::cloudevents_binary),
    ("cloudevents_structured", targets::cloudevents_structured),
    ("confluent_wire", targets::confluent_wire),
];
