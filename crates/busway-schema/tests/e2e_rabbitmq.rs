#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Typed, versioned events end to end on a real RabbitMQ (`BUSWAY_RABBITMQ_URL`, or a
//! testcontainers RabbitMQ): the same scenarios as `e2e_memory.rs`, from `common/e2e.rs`.

#[path = "common/e2e.rs"]
mod e2e;

use busway_rabbitmq::{RabbitMqBroker, RabbitMqConfig};
use busway_testkit::Harness;

async fn harness() -> Harness {
    let url = busway_testkit::fixtures::rabbitmq_url().await;
    let broker =
        RabbitMqBroker::connect(RabbitMqConfig::new(url).connection_name("busway-schema-e2e"))
            .await
            .expect("connect to the test RabbitMQ");
    Harness::new(broker)
}

e2e_tests!(harness);
