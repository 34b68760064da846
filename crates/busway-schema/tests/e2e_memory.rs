#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Typed, versioned events end to end on the in-process broker: the scenarios of
//! `common/e2e.rs` (upcasting, old and new consumers under each compatibility mode, validation,
//! undecodable and unknown events, incompatible schemas) with the busway-core consumer runtime.

#[path = "common/e2e.rs"]
mod e2e;

use busway_memory::MemoryBroker;
use busway_testkit::Harness;

async fn harness() -> Harness {
    let broker = MemoryBroker::new();
    Harness::new(broker)
}

e2e_tests!(harness);
