//! The conformance suite against Service Bus: the in-process busway-sb-emulator by default, the
//! namespace in `BUSWAY_SERVICEBUS_CONNECTION_STRING` when set (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use busway_testkit::{Expectations, Harness};

/// The adapter connects through a TCP proxy (emulators: plain AMQP), so that the
/// connection-cut scenario can cut its connections like a network failure would.
async fn harness() -> Harness {
    let mut server = common::server().await;
    let proxy = server.proxy().await;
    if let Some(proxy) = &proxy {
        server.config = server.config_through(proxy);
    }
    let pooled = common::Pooled::new(server).await;
    let faults = pooled.clone();
    let harness = Harness::new(pooled)
        .refuse_dead_letters(Arc::new(move |topic, group, refuse| {
            let faults = faults.clone();
            Box::pin(async move { faults.refuse_dead_letters(&topic, &group, refuse).await })
        }))
        .expectations(Expectations {
            max_message_bytes: busway_servicebus::STANDARD_MAX_MESSAGE_BYTES,
            large_message_bytes: 200 * 1024,
            members_share_load: true,
            patience: Duration::from_secs(30),
            quiet_period: Duration::from_secs(1),
            timing_tolerance: Duration::from_millis(100),
        });
    match proxy {
        Some(proxy) => harness.cut_connections(Arc::new(move || {
            proxy.cut();
            Box::pin(async {})
        })),
        None => harness,
    }
}

busway_testkit::conformance_suite! {
    harness: harness,
    lacks: [],
    skip: [
        broker_restart_without_loss: "Service Bus emulators (official and busway-sb-emulator) keep no messages across a restart, and a test cannot restart a real namespace",
    ],
}
