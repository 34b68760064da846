//! # busway-testkit
//!
//! Two things every adapter's tests need:
//!
//! - [`conformance`]: one list of scenarios, run against every adapter with
//!   [`conformance_suite!`], so that every broker honours the same semantics. Each scenario is a
//!   real test that fails when the adapter is wrong.
//! - [`fixtures`]: the address of a real broker, from a `BUSWAY_*` environment variable, or from a
//!   container started with testcontainers (official images) when Docker is available; with
//!   neither, the fixture fails with a message naming both ways.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod conformance;
pub mod fixtures;

pub use conformance::{Capabilities, Harness};
