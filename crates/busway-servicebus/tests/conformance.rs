//! The conformance suite against Service Bus: the in-process busway-sb-emulator by default, the
//! namespace in `BUSWAY_SERVICEBUS_CONNECTION_STRING` when set (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use busway_testkit::{Capabilities, Harness};

async fn harness() -> Harness {
    let pooled = common::Pooled::new(common::server().await).await;
    Harness::new(pooled.clone(), pooled.clone(), pooled).capabilities(Capabilities {
        max_message_bytes: busway_servicebus::STANDARD_MAX_MESSAGE_BYTES,
        large_message_bytes: 200 * 1024,
        members_share_load: true,
        patience: Duration::from_secs(30),
        quiet_period: Duration::from_secs(1),
        timing_tolerance: Duration::from_millis(100),
    })
}

busway_testkit::conformance_suite! {
    harness: harness,
    skip: [
        broker_restart_without_loss: "Service Bus emulators (official and busway-sb-emulator) keep no messages across a restart, and a test cannot restart a real namespace",
    ],
}
