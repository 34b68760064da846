//! The `Settle` contract on a real RabbitMQ: a handle dropped unsettled gives the message back
//! with its attempt counted (on classic queues too, which only flag a redelivery), a refused
//! settlement leaves the handle usable for another try, and a delivery lost with its channel
//! says so on every try instead of pretending to settle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use busway_core::{
    DeadLetterMetadata, DeadLetterReason, DeadLetters, ErrorKind, Message, Publisher, Settlement,
    SubscribeOptions, Subscriber,
};
use busway_rabbitmq::QueueType;
use busway_testkit::conformance::support::next_delivery;
use chrono::Utc;

const PATIENCE: Duration = Duration::from_secs(20);

fn numbered(n: u64) -> Message {
    Message::builder("/settle-tests", "numbered")
        .json(&n)
        .unwrap()
        .build()
        .unwrap()
}

/// Drops the same message's delivery again and again: each comes back counting one more
/// attempt. Before the fix, a classic queue requeued it with only the `redelivered` flag set,
/// so every later delivery was attempt 2 and the runtime could never dead-letter it.
async fn dropped_deliveries_count(queue_type: QueueType) {
    let (config, _) = common::config("dropped").await;
    let broker = common::connect(config.queue_type(queue_type)).await;
    let topic = common::unique("dropped");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    let m = numbered(1);
    broker.publish(&topic, m.clone()).await.unwrap();
    for expected in 1..=4 {
        let d = next_delivery(&mut sub, PATIENCE).await;
        assert_eq!(d.message(), &m, "the message must come back unchanged");
        assert_eq!(d.attempt(), expected, "{queue_type:?}: attempt not counted");
        // Checked after the attempt, which is what a hot loop gets wrong.
        if expected > 1 {
            assert!(
                d.info().first_failure.is_some(),
                "a given-back delivery failed: the next one knows when"
            );
        }
        if expected < 4 {
            drop(d);
        } else {
            d.ack().await.unwrap();
        }
    }
    // Given back once per drop: no duplicate is left behind.
    broker.publish(&topic, numbered(2)).await.unwrap();
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(d.message().data().as_ref(), b"2", "a duplicate was left");
    d.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_deliveries_come_back_with_the_attempt_counted_on_classic_queues() {
    dropped_deliveries_count(QueueType::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_deliveries_come_back_with_the_attempt_counted_on_quorum_queues() {
    dropped_deliveries_count(QueueType::Quorum).await;
}

fn metadata(topic: &str, attempts: u32) -> DeadLetterMetadata {
    DeadLetterMetadata {
        reason: DeadLetterReason::PermanentError,
        error: "no such order".into(),
        original_topic: topic.into(),
        group: "g".into(),
        attempts,
        first_failure: Utc::now(),
        last_failure: Utc::now(),
    }
}

/// A dead letter the broker refuses (its DLQ is full: the confirm is a nack) fails the
/// settlement and leaves the handle as it was; once the broker takes dead letters again, the
/// same handle dead-letters the message, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_settlement_leaves_the_handle_usable() {
    let (config, _) = common::config("refused").await;
    let broker = common::connect(config).await;
    let topic = common::unique("refused");
    let dlq = format!("{topic}.g.dlq");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    let m = numbered(1);
    broker.publish(&topic, m.clone()).await.unwrap();
    let (message, info, mut handle) = next_delivery(&mut sub, PATIENCE).await.into_parts();
    assert_eq!(message, m);
    common::refuse_publishes_to(&dlq, true).await;
    let settlement = Settlement::DeadLetter(Box::new(metadata(&topic, info.attempt)));
    let err = handle.settle(&settlement).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    common::refuse_publishes_to(&dlq, false).await;
    // The policy is gone from the queue a moment after `clear_policy` returns.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while let Err(e) = handle.settle(&settlement).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handle never settled after the broker took dead letters again: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(handle);
    let dead = broker.peek(&topic, "g", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "dead-lettered once: {dead:?}");
    assert_eq!(dead[0].message, m);
    // Settled: nothing comes back to the group.
    broker.publish(&topic, numbered(2)).await.unwrap();
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(d.message().data().as_ref(), b"2");
    d.ack().await.unwrap();
}

/// A delivery whose channel the broker closed cannot be settled any more: every try says so
/// (before the fix, a second try after the failed ack answered Ok, a settlement that never
/// happened), no copy is sent for it, and the broker redelivers it with the attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_lost_with_its_channel_fails_every_settlement() {
    let (config, name) = common::config("lost").await;
    let broker = common::connect(config).await;
    let topic = common::unique("lost");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    let m = numbered(1);
    broker.publish(&topic, m.clone()).await.unwrap();
    let (_, _, mut handle) = next_delivery(&mut sub, PATIENCE).await.into_parts();
    assert!(common::close_connections(&name).await >= 2);
    let redeliver = Settlement::Redeliver {
        delay: Duration::ZERO,
        first_failure: Utc::now(),
    };
    // The client notices the closed channel a moment after the broker closed it; until then
    // an ack may still be written to the dying socket, so only the second try is certain.
    let _ = handle.settle(&Settlement::Ack).await;
    for settlement in [Settlement::Ack, redeliver] {
        let err = handle.settle(&settlement).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Closed | ErrorKind::Connection),
            "{err}"
        );
    }
    drop(handle);
    let again = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(again.message(), &m);
    assert_eq!(again.attempt(), 2, "redelivered by the broker, counted");
    again.ack().await.unwrap();
    // No copy was sent for the lost delivery.
    broker.publish(&topic, numbered(2)).await.unwrap();
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(
        d.message().data().as_ref(),
        b"2",
        "a copy duplicated the lost delivery"
    );
    d.ack().await.unwrap();
}
