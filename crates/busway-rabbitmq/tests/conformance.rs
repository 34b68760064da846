//! The conformance suite against a real RabbitMQ, with classic queues (the default);
//! `conformance_quorum.rs` runs it again with quorum queues, which count and settle deliveries
//! differently.

mod common;

busway_testkit::conformance_suite! {
    harness: harness,
    lacks: [],
    skip: [],
}

async fn harness() -> busway_testkit::Harness {
    common::harness(busway_rabbitmq::QueueType::Classic).await
}
