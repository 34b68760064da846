//! A message busway accepts for publishing can always be redelivered and dead-lettered: the
//! publish-side checks keep room for the metadata those copies carry, both under
//! `max_message_bytes` and in the AMQP frame the properties must fit in (RabbitMQ closes the
//! whole connection over a content header larger than `frame_max`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use busway_core::dead_letter::{MAX_ERROR_LEN, MAX_REASON_LEN};
use busway_core::preflight::METADATA_HEADROOM;
use busway_core::{
    DeadLetterMetadata, DeadLetterReason, DeadLetters, ErrorKind, Message, Publisher,
    SubscribeOptions, Subscriber,
};
use busway_rabbitmq::RabbitMqBroker;
use busway_testkit::conformance::support::next_delivery;
use chrono::Utc;

const PATIENCE: Duration = Duration::from_secs(20);

/// The largest metadata a dead letter carries: error and reason at their bounds.
fn worst_metadata(topic: &str, attempts: u32) -> DeadLetterMetadata {
    DeadLetterMetadata {
        reason: DeadLetterReason::Other("r".repeat(MAX_REASON_LEN)),
        error: "e".repeat(MAX_ERROR_LEN),
        original_topic: topic.into(),
        group: "g".into(),
        attempts,
        first_failure: Utc::now(),
        last_failure: Utc::now(),
    }
}

/// Publishes `m` to a group, redelivers it once (a copy with the redelivery headers), then
/// dead-letters the copy with the largest metadata; the dead letter must be the message.
async fn redeliver_then_dead_letter(broker: &RabbitMqBroker, topic: &str, m: &Message) {
    let mut sub = broker
        .subscribe(topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    broker.publish(topic, m.clone()).await.expect("accepted");
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(d.message(), m);
    d.redeliver(Duration::ZERO)
        .await
        .expect("a published message can be redelivered");
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!((d.message(), d.attempt()), (m, 2));
    let attempts = d.attempt();
    d.dead_letter(worst_metadata(topic, attempts))
        .await
        .expect("a published message can be dead-lettered");
    let dead = broker.peek(topic, "g", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        &dead[0].message, m,
        "the dead letter is the message, unchanged"
    );
    let meta = dead[0].metadata.as_ref().expect("metadata");
    assert_eq!(meta.error.len(), MAX_ERROR_LEN);
}

/// The size limit keeps the headroom: a message at `max_message_bytes` less the headroom is
/// accepted and can take every path; one byte more is refused before sending (it used to be
/// accepted up to `max_message_bytes` itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_at_the_size_limit_can_be_redelivered_and_dead_lettered() {
    let max = 64 * 1024;
    let (config, _) = common::config("sizelimit").await;
    let broker = common::connect(config.max_message_bytes(max)).await;
    let topic = common::unique("sizelimit");
    let empty = Message::builder("/headroom", "big").build().unwrap();
    let fill = |n: usize| empty.to_builder().data(vec![7u8; n]).build().unwrap();
    let at_limit = fill(max - METADATA_HEADROOM - empty.encoded_len());
    assert_eq!(at_limit.encoded_len(), max - METADATA_HEADROOM);
    let over = fill(max - METADATA_HEADROOM - empty.encoded_len() + 1);
    let err = broker.publish(&topic, over).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(
        err.to_string()
            .contains(&(max - METADATA_HEADROOM).to_string()),
        "{err}"
    );
    redeliver_then_dead_letter(&broker, &topic, &at_limit).await;
}

/// Attributes travel in the content header, which must fit in one frame. The largest message
/// busway accepts (found by asking it: a topic without groups answers `Unroutable` for what
/// fits and `TooLarge` for what does not) can still be redelivered and dead-lettered. Before the
/// headroom, attributes were accepted up to the frame size, and the dead letter's metadata took
/// the header past it: RabbitMQ answered FRAME_ERROR and closed the connection, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_attributes_fill_the_frame_can_be_dead_lettered() {
    let (config, _) = common::config("framelimit").await;
    let broker = common::connect(config.publish_timeout(Duration::from_secs(10))).await;
    let nowhere = common::unique("framelimit-probe");
    let with = |n: usize| {
        Message::builder("/headroom", "wide")
            .extension("wide", "w".repeat(n))
            .data("small body")
            .build()
            .unwrap()
    };
    let fits = |e: busway_core::Error| match e.kind() {
        ErrorKind::Unroutable => true,
        ErrorKind::TooLarge | ErrorKind::Rejected => false,
        _ => panic!("unexpected: {e}"),
    };
    // The frame is 128 KiB (RabbitMQ's default frame_max): 1 KiB fits, 1 MiB does not.
    let (mut lo, mut hi) = (1024, 1024 * 1024);
    assert!(fits(broker.publish(&nowhere, with(lo)).await.unwrap_err()));
    assert!(!fits(broker.publish(&nowhere, with(hi)).await.unwrap_err()));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(broker.publish(&nowhere, with(mid)).await.unwrap_err()) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let topic = common::unique("framelimit");
    redeliver_then_dead_letter(&broker, &topic, &with(lo)).await;
}
