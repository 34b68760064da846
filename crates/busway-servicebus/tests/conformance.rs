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
    run: [
        round_trip_preserves_attributes,
        topic_isolation,
        competing_consumers,
        fan_out_to_groups,
        order_per_key,
        ack_removes_nack_redelivers,
        in_process_retry_then_success,
        delayed_redelivery_honoured,
        poison_message_dead_lettered_after_n_attempts,
        permanent_error_dead_lettered_at_once,
        unacked_redelivered_after_consumer_dies,
        resume_after_close_without_loss,
        concurrent_publishers_without_loss,
        large_message_round_trips,
        oversized_message_refused,
        duplicate_publish_absorbed_by_dedup,
        scheduled_delivery,
        graceful_shutdown_drains_in_flight,
        batch_publish,
        dead_letters_redrive_and_purge,
    ],
    skip: [
        broker_restart_without_loss: "Service Bus emulators (official and busway-sb-emulator) keep no messages across a restart, and a test cannot restart a real namespace",
    ],
}
