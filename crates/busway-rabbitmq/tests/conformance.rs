//! The conformance suite against a real RabbitMQ.

mod common;

use std::sync::Arc;
use std::time::Duration;

use busway_testkit::{Capabilities, Harness};

const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

async fn harness() -> Harness {
    let (config, name) = common::config("conformance").await;
    let broker = common::connect(config.max_message_bytes(MAX_MESSAGE_BYTES)).await;
    // A broker restart, as the clients see it: the broker closes every connection of this
    // harness (CONNECTION_FORCED) and they must come back. Only this harness's connections are
    // cut, so the scenarios running in parallel on the shared broker are left alone.
    let restart: busway_testkit::conformance::Restart = Arc::new(move || {
        let name = name.clone();
        Box::pin(async move {
            let closed = common::close_connections(&name).await;
            assert!(
                closed >= 2,
                "expected to close the publishing and consuming connections, closed {closed}"
            );
        })
    });
    Harness::new(broker.clone(), broker.clone(), broker)
        .capabilities(Capabilities {
            max_message_bytes: MAX_MESSAGE_BYTES,
            large_message_bytes: 3 * 1024 * 1024,
            members_share_load: true,
            patience: Duration::from_secs(30),
            quiet_period: Duration::from_millis(500),
            // Message TTLs are in whole milliseconds and expire no earlier than due.
            timing_tolerance: Duration::from_millis(50),
        })
        .restart(restart)
}

busway_testkit::conformance_suite! {
    harness: harness,
    skip: [],
}
