//! Scheduled messages are never dropped: one that falls due while no group is bound to its
//! topic is parked, and delivered to the next group that subscribes. One scheduled further
//! ahead than a queue can hold waits in hops, and is never handed out before it is due.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use busway_core::{ErrorKind, Message, Scheduler, SubscribeOptions, Subscriber};
use busway_rabbitmq::QueueType;
use busway_testkit::conformance::support::next_delivery;
use chrono::Utc;
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(20);

/// How many messages `queue` holds, if it exists (a passive declare on a channel of its own).
async fn depth(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let depth = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = ch.close(200, "OK".into()).await;
    depth
}

async fn parked_until_a_group_subscribes(queue_type: QueueType) {
    let (config, _) = common::config("parked").await;
    let broker = common::connect(config.queue_type(queue_type)).await;
    let raw = Connection::connect(&common::url().await, ConnectionProperties::default())
        .await
        .expect("raw connection");
    let topic = common::unique("parked");
    let parking = format!("{topic}.unrouted");
    let m = Message::builder("/schedule-tests", "reminder.due")
        .data("wake up")
        .build()
        .unwrap();
    let due = Utc::now() + chrono::Duration::seconds(1);
    broker
        .schedule(&topic, m.clone(), due)
        .await
        .expect("scheduling to a topic without groups is accepted");
    // Causality, not timing: it cannot be parked before it falls due.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let parked = depth(&raw, &parking).await.unwrap_or(0);
        if parked >= 1 {
            assert!(Utc::now() >= due, "parked before it fell due");
            assert_eq!(parked, 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled message fell due with no group bound and was not parked (dropped)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sub = broker
        .subscribe(&topic, "late", SubscribeOptions::default())
        .await
        .unwrap();
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(d.message(), &m, "delivered unchanged");
    assert_eq!(d.attempt(), 1, "parking is no delivery attempt");
    d.ack().await.unwrap();
    assert_eq!(
        depth(&raw, &parking).await,
        Some(0),
        "released from the parking queue"
    );
    // Once a group is bound, scheduled messages go straight to it.
    broker
        .schedule(
            &topic,
            m.clone(),
            Utc::now() + chrono::Duration::milliseconds(200),
        )
        .await
        .unwrap();
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(d.message(), &m);
    d.ack().await.unwrap();
    assert_eq!(
        depth(&raw, &parking).await,
        Some(0),
        "parked with a group bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_without_a_group_is_parked_then_delivered_on_classic_queues() {
    parked_until_a_group_subscribes(QueueType::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_without_a_group_is_parked_then_delivered_on_quorum_queues() {
    parked_until_a_group_subscribes(QueueType::Quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parking_queue_is_no_group() {
    let (config, _) = common::config("reserved").await;
    let broker = common::connect(config).await;
    let err = broker
        .subscribe(
            &common::unique("reserved"),
            "unrouted",
            SubscribeOptions::default(),
        )
        .await
        .err()
        .expect("a group whose queue would be the parking queue");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

/// Further ahead than a queue's TTL can hold (~49 days): accepted, and the message waits its
/// first hop in the longest schedule queue, carrying the time it is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_beyond_a_queue_ttl_waits_in_hops() {
    let (config, _) = common::config("far").await;
    let broker = common::connect(config).await;
    let raw = Connection::connect(&common::url().await, ConnectionProperties::default())
        .await
        .expect("raw connection");
    let topic = common::unique("far");
    let sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    let m = Message::builder("/schedule-tests", "renewal.due")
        .data("renew")
        .build()
        .unwrap();
    let due = Utc::now() + chrono::Duration::days(60);
    broker
        .schedule(&topic, m.clone(), due)
        .await
        .expect("scheduling 60 days ahead is accepted");
    let hop = format!("{topic}.due.4290000000");
    assert_eq!(depth(&raw, &hop).await, Some(1), "waits in the longest hop");
    let ch = raw.create_channel().await.unwrap();
    let got = ch
        .basic_get(hop.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the waiting message");
    let carried = got
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("busway-due").cloned());
    let Some(AMQPValue::LongString(carried)) = carried else {
        panic!("no busway-due header: {carried:?}");
    };
    let carried = busway_core::message::parse_time(&carried.to_string()).unwrap();
    assert_eq!(carried, due, "carries the time it is due");
    got.delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: false,
        })
        .await
        .unwrap();
    drop(sub);
}

/// A hop that ends before the message is due (as the ~49-day hops of a far-future schedule
/// do): the consumer holds it back through its group's wait queue and hands it out only once
/// it is due, unchanged, as a first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_arriving_before_it_is_due_is_held_back() {
    let (config, _) = common::config("early").await;
    let broker = common::connect(config).await;
    let raw = Connection::connect(&common::url().await, ConnectionProperties::default())
        .await
        .expect("raw connection");
    let topic = common::unique("early");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    // What the end of a hop puts into the topic: the event, binary mode, and its due time.
    let due = Utc::now() + chrono::Duration::seconds(2);
    let mut headers = FieldTable::default();
    for (name, value) in [
        ("cloudEvents_specversion", "1.0".to_owned()),
        ("cloudEvents_id", "early-1".to_owned()),
        ("cloudEvents_source", "/schedule-tests".to_owned()),
        ("cloudEvents_type", "renewal.due".to_owned()),
        ("busway-due", busway_core::message::format_time(due)),
    ] {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    let ch = raw.create_channel().await.unwrap();
    ch.basic_publish(
        topic.as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        b"renew",
        BasicProperties::default().with_headers(headers),
    )
    .await
    .unwrap();
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert!(Utc::now() >= due, "handed out before it was due");
    assert_eq!(d.message().id(), "early-1");
    assert_eq!(d.message().data().as_ref(), b"renew");
    assert_eq!(d.attempt(), 1, "holding back is no delivery attempt");
    d.ack().await.unwrap();
    assert_eq!(
        depth(&raw, &format!("{topic}.g")).await,
        Some(0),
        "the held-back original was acked"
    );
}
