//! Failure paths of the Kafka adapter on the shared test broker: a delivery dropped unsettled,
//! the largest publishable message on its way to the DLQ, scheduled messages and groups that
//! join late.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use busway_core::preflight::METADATA_HEADROOM;
use busway_core::{
    Consumer, DeadLetterReason, DeadLetters, Error, HandlerError, Message, Publisher, Scheduler,
    StartPosition, SubscribeOptions, Subscriber, handler_fn,
};
use busway_kafka::KafkaBroker;
use busway_testkit::conformance::support::{eventually, next_delivery, numbered, unique};
use chrono::Utc;

const PATIENCE: Duration = Duration::from_secs(60);

/// A delivery dropped without being settled (its task aborted, its settlement given up) comes
/// back to the same subscription with its attempt counted, while the records behind it flow;
/// once it is settled, the group commits past everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_comes_back_counted_and_commits_move_past_it() {
    let broker = common::shared_broker().await;
    let topic = unique("dropped");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    // One key: one partition, so the commit point of that partition depends on the first.
    let sent: Vec<Message> = (0..4)
        .map(|i| numbered(i).to_builder().partition_key("k").build().unwrap())
        .collect();
    for m in &sent {
        broker.publish(&topic, m.clone()).await.unwrap();
    }
    let first = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(first.message(), &sent[0]);
    assert_eq!(first.attempt(), 1);
    drop(first);
    for m in &sent[1..] {
        let d = next_delivery(&mut sub, PATIENCE).await;
        assert_eq!(
            d.message(),
            m,
            "the records behind the dropped one keep flowing"
        );
        d.ack().await.unwrap();
    }
    let again = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(again.message(), &sent[0], "the dropped delivery came back");
    assert_eq!(again.attempt(), 2, "its attempt is counted");
    let group_id = broker.config().kafka_group_id(&topic, "g");
    let bootstrap = broker.config().bootstrap_servers.clone();
    assert!(
        !common::committed_everything(&bootstrap, &group_id, &topic),
        "committed past a record still in flight"
    );
    again.ack().await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !common::committed_everything(&bootstrap, &group_id, &topic) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "commits stopped at the dropped record: {:?}",
            common::commits(&bootstrap, &group_id, &topic)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sub.close().await.unwrap();
}

/// Headroom: a message of exactly the largest size `publish` accepts can be dead-lettered,
/// metadata and all, where the brokers take records of at most `max_message_bytes`. tansu
/// enforces no record size, so the limit is the one the producer enforces before sending
/// (`message.max.bytes`), set to `max_message_bytes` as a broker's would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_publishable_message_is_dead_lettered() {
    common::init_logs();
    let bootstrap = busway_testkit::fixtures::kafka_bootstrap().await;
    let limit = 256 * 1024;
    let mut config = common::config(&bootstrap);
    config.max_message_bytes = limit;
    config
        .extra
        .insert("message.max.bytes".into(), limit.to_string());
    let broker = KafkaBroker::connect(config).await.unwrap();
    let topic = unique("largest");
    let group = "g";

    // Find the largest message from what the check says about a larger one.
    let sized = |n: usize| {
        Message::builder("/largest", "largest.v1")
            .partition_key("k")
            .data(vec![b'x'; n])
            .build()
            .unwrap()
    };
    let (size, allowed) = match broker.publish(&topic, sized(limit)).await {
        Err(Error::TooLarge { size, limit }) => (size, limit),
        other => panic!("a message of the broker's limit must be refused: {other:?}"),
    };
    assert_eq!(
        allowed,
        limit - METADATA_HEADROOM,
        "the check keeps the headroom"
    );
    let largest = sized(limit - (size - allowed));
    let one_more = sized(limit - (size - allowed) + 1);
    assert!(matches!(
        broker.publish(&topic, one_more).await,
        Err(Error::TooLarge { .. })
    ));

    let consumer = Consumer::builder(Arc::new(broker.clone()), &topic, group)
        .start_position(StartPosition::Earliest)
        .start(handler_fn(|_m: Message| async {
            Err::<(), _>(HandlerError::permanent(
                "refused by the handler, with an error text as long as busway keeps: ".repeat(40),
            ))
        }))
        .await
        .unwrap();
    broker.publish(&topic, largest.clone()).await.unwrap();
    eventually(PATIENCE, "the largest message dead-lettered", || {
        consumer.stats().dead_lettered == 1
    })
    .await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(
        report.stats.settle_failures, 0,
        "the dead letter was refused first"
    );
    let dead = broker.peek(&topic, group, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].message, largest,
        "the dead letter is the message, unchanged"
    );
    let meta = dead[0].metadata.as_ref().unwrap();
    assert_eq!(meta.reason, DeadLetterReason::PermanentError);
}

/// A group that joins after a message was scheduled receives it when it falls due; messages
/// published and due before the group joined are not its own; a message scheduled after it
/// joined arrives even when its time has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_group_gets_the_scheduled_messages_that_fall_due_after_it_joined() {
    let broker = common::shared_broker().await;
    let topic = unique("latejoin");
    let before_and_due = numbered(1);
    let before_not_due = numbered(2);
    let after_but_past = numbered(3);
    let now = Utc::now();
    broker
        .schedule(
            &topic,
            before_and_due.clone(),
            now - chrono::Duration::seconds(5),
        )
        .await
        .unwrap();
    broker
        .schedule(
            &topic,
            before_not_due.clone(),
            now + chrono::Duration::seconds(3),
        )
        .await
        .unwrap();
    // Published before the group joins, due before it too: nothing waits for the group.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sub = broker
        .subscribe(&topic, "late", SubscribeOptions::default())
        .await
        .unwrap();
    broker
        .schedule(
            &topic,
            after_but_past.clone(),
            now - chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
    let mut got = BTreeMap::new();
    for _ in 0..2 {
        let d = next_delivery(&mut sub, PATIENCE).await;
        got.insert(d.message().id().to_owned(), d.message().clone());
        d.ack().await.unwrap();
    }
    assert!(got.contains_key(before_not_due.id()), "{got:?}");
    assert!(got.contains_key(after_but_past.id()), "{got:?}");
    // Nothing else is on its way: the next delivery is a sentinel published now.
    let sentinel = numbered(4);
    broker.publish(&topic, sentinel.clone()).await.unwrap();
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(
        d.message().id(),
        sentinel.id(),
        "a message scheduled and due before the group joined reached it"
    );
    d.ack().await.unwrap();
    sub.close().await.unwrap();
}
