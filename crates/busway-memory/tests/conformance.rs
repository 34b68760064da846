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
        broker_restart_without_loss: "the in-process broker lives in the test process: there is nothing to restart",
    ],
}
