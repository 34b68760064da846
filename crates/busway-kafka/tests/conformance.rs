//! The conformance suite against a real Kafka-protocol broker (`BUSWAY_KAFKA_BOOTSTRAP`, which
//! `scripts/test` points at tansu, or the Apache Kafka image with Docker).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use busway_testkit::{Expectations, Harness};

async fn harness() -> Harness {
    let broker = common::shared_broker().await;
    Harness::new(broker).expectations(expectations())
}

fn expectations() -> Expectations {
    Expectations {
        max_message_bytes: 1024 * 1024,
        large_message_bytes: 900 * 1024,
        members_share_load: true,
        patience: Duration::from_secs(60),
        quiet_period: Duration::from_secs(1),
        timing_tolerance: Duration::from_millis(50),
    }
}

busway_testkit::conformance_suite! {
    harness: harness,
    lacks: [],
    skip: [
        broker_restart_without_loss: "runs in tests/restart.rs against a private tansu it can kill and restart, not the shared broker other tests use",
        failed_settlement_neither_loses_nor_freezes: "runs in tests/refused_dead_letters.rs on librdkafka's mock cluster: tansu cannot refuse one topic's records (it enforces no message size limit, ACL or topic error)",
        connection_cut_redelivers_unsettled: "runs in tests/connection_cut.rs against a private tansu whose every client connection goes through a proxy that cuts them; the shared broker's connections belong to other tests too",
    ],
}
