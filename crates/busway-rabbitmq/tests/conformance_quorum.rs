//! The conformance suite against a real RabbitMQ with quorum queues: the broker counts
//! deliveries itself (`x-delivery-count`), dead-letters with its own strategy and expires wait
//! queues differently from classic queues, so the same scenarios run on both.

mod common;

busway_testkit::conformance_suite! {
    harness: harness,
    lacks: [],
    skip: [
        failed_settlement_neither_loses_nor_freezes: "RabbitMQ quorum queues enforce overflow=reject-publish one message late (the publish that takes the queue over its limit is confirmed), so no queue limit makes the broker refuse the first dead letter; the refusal path is queue-type independent and runs in conformance.rs on classic queues",
    ],
}

async fn harness() -> busway_testkit::Harness {
    common::harness(busway_rabbitmq::QueueType::Quorum).await
}
