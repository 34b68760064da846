//! The conformance suite on the in-process broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use busway_memory::{MemoryBroker, MemoryConfig};
use busway_testkit::{Capabilities, Harness};

async fn harness() -> Harness {
    let broker = MemoryBroker::with_config(MemoryConfig {
        max_message_bytes: 1024 * 1024,
        ..MemoryConfig::default()
    });
    Harness::new(broker.clone(), broker.clone(), broker).capabilities(Capabilities {
        max_message_bytes: 1024 * 1024,
        large_message_bytes: 1000 * 1024,
        ..Capabilities::default()
    })
}

busway_testkit::conformance_suite! {
    harness: harness,
    skip: [
        broker_restart_without_loss: "the in-process broker lives in the test process: there is nothing to restart",
    ],
}
