//! The conformance suite on the in-process broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use busway_memory::{MemoryBroker, MemoryConfig};
use busway_testkit::{Expectations, Harness};

async fn harness() -> Harness {
    let broker = MemoryBroker::with_config(MemoryConfig {
        max_message_bytes: 1024 * 1024,
        ..MemoryConfig::default()
    })
    .unwrap();
    let faults = broker.clone();
    Harness::new(broker)
        .expectations(Expectations {
            max_message_bytes: 1024 * 1024,
            large_message_bytes: 1000 * 1024,
            ..Expectations::default()
        })
        .refuse_dead_letters(Arc::new(move |topic, group, refuse| {
            faults.refuse_dead_letters(&topic, &group, refuse);
            Box::pin(async {})
        }))
}

busway_testkit::conformance_suite! {
    harness: harness,
    lacks: [survives_broker_restart, remote],
    skip: [],
}
