//! `broker_restart_without_loss` against a private tansu (sqlite storage, so acknowledged
//! messages survive), killed and restarted mid-stream. The shared broker is left alone: other
//! conformance tests run on it at the same time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use busway_kafka::KafkaBroker;
use busway_testkit::{Capabilities, Harness};
use tokio::sync::Mutex;

/// The private broker lives in the restart hook, so it dies with the harness.
async fn harness() -> Harness {
    let tansu = common::Tansu::start().await;
    let bootstrap = tansu.bootstrap();
    let tansu = Arc::new(Mutex::new(tansu));
    let broker = KafkaBroker::connect(common::config(&bootstrap))
        .await
        .expect("connect to tansu");
    let restart: busway_testkit::conformance::Restart = Arc::new(move || {
        let tansu = tansu.clone();
        Box::pin(async move { tansu.lock().await.restart().await })
    });
    Harness::new(broker.clone(), broker.clone(), broker)
        .capabilities(Capabilities {
            patience: Duration::from_secs(60),
            quiet_period: Duration::from_secs(1),
            ..Capabilities::default()
        })
        .restart(restart)
}

busway_testkit::conformance_suite! {
    harness: harness,
    run: [broker_restart_without_loss],
    skip: [
        round_trip_preserves_attributes: "runs in tests/conformance.rs",
        topic_isolation: "runs in tests/conformance.rs",
        competing_consumers: "runs in tests/conformance.rs",
        fan_out_to_groups: "runs in tests/conformance.rs",
        order_per_key: "runs in tests/conformance.rs",
        ack_removes_nack_redelivers: "runs in tests/conformance.rs",
        in_process_retry_then_success: "runs in tests/conformance.rs",
        delayed_redelivery_honoured: "runs in tests/conformance.rs",
        poison_message_dead_lettered_after_n_attempts: "runs in tests/conformance.rs",
        permanent_error_dead_lettered_at_once: "runs in tests/conformance.rs",
        unacked_redelivered_after_consumer_dies: "runs in tests/conformance.rs",
        resume_after_close_without_loss: "runs in tests/conformance.rs",
        concurrent_publishers_without_loss: "runs in tests/conformance.rs",
        large_message_round_trips: "runs in tests/conformance.rs",
        oversized_message_refused: "runs in tests/conformance.rs",
        duplicate_publish_absorbed_by_dedup: "runs in tests/conformance.rs",
        scheduled_delivery: "runs in tests/conformance.rs",
        graceful_shutdown_drains_in_flight: "runs in tests/conformance.rs",
        batch_publish: "runs in tests/conformance.rs",
        dead_letters_redrive_and_purge: "runs in tests/conformance.rs",
    ],
}
