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
//! - [`proxy`]: a TCP proxy in front of a broker that a test can take down and bring back, to cut
//!   one client's connections without disturbing others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod conformance;
pub mod fixtures;
pub mod proxy;

pub use conformance::{Expectations, Harness};
