//! RabbitMQ-specific behaviour beyond the conformance suite: foreign messages, undecodable
//! messages, unroutable publishes, outages and reconnection, quorum queues, existing topology.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use busway_core::{
    Broker, DeadLetterReason, DeadLetters, ErrorKind, HandlerError, Message, Ordering, Publisher,
    SubscribeOptions, Subscriber, handler_fn,
};
use busway_rabbitmq::{QueueType, RabbitMqBroker, RabbitMqConfig, ReconnectConfig};
use busway_testkit::conformance::support::{Recorder, eventually, next_delivery};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(20);

/// A raw lapin channel in confirm mode: the "other AMQP client" of these tests.
async fn raw_channel() -> (Connection, lapin::Channel) {
    let conn = Connection::connect(&common::url().await, ConnectionProperties::default())
        .await
        .expect("raw lapin connection");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    (conn, ch)
}

async fn raw_publish(
    ch: &lapin::Channel,
    exchange: &str,
    key: &str,
    props: BasicProperties,
    body: &[u8],
) {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
}

fn numbered(n: u64) -> Message {
    Message::builder("/adapter-tests", "numbered")
        .json(&n)
        .unwrap()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_message_with_native_properties_is_consumed() {
    let (config, _) = common::config("foreign").await;
    let broker = common::connect(config).await;
    let topic = common::unique("foreign");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    let (_conn, ch) = raw_channel().await;
    let props = BasicProperties::default()
        .with_message_id("legacy-1".into())
        .with_type("legacy.order.created".into())
        .with_content_type("application/json".into())
        .with_timestamp(1_700_000_000)
        .with_correlation_id("corr-9".into())
        .with_app_id("legacy-app".into());
    raw_publish(
        &ch,
        &topic,
        "legacy.order.created",
        props,
        br#"{"order":1}"#,
    )
    .await;
    let d = next_delivery(&mut sub, PATIENCE).await;
    let m = d.message();
    assert_eq!(d.decode_error(), None);
    assert_eq!(m.id(), "legacy-1");
    assert_eq!(m.ty(), "legacy.order.created");
    assert_eq!(m.source(), "legacy-app");
    assert_eq!(m.datacontenttype(), Some("application/json"));
    assert_eq!(m.correlation_id(), Some("corr-9"));
    assert_eq!(m.time().unwrap().timestamp(), 1_700_000_000);
    assert_eq!(m.data().as_ref(), br#"{"order":1}"#);
    assert_eq!(d.attempt(), 1);
    d.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_message_is_dead_lettered_with_its_original_bytes_and_properties() {
    let (config, _) = common::config("undecodable").await;
    let broker = common::connect(config).await;
    let topic = common::unique("undecodable");
    let handled = Recorder::default();
    let consumer = busway_core::Consumer::builder(Arc::new(broker.clone()), &topic, "g")
        .start(handled.handler())
        .await
        .unwrap();
    let (_conn, ch) = raw_channel().await;
    let mut headers = FieldTable::default();
    headers.insert("x-origin".into(), AMQPValue::LongString("legacy".into()));
    let props = BasicProperties::default()
        .with_headers(headers)
        .with_priority(3)
        .with_app_id("mystery".into())
        .with_delivery_mode(2);
    let garbage = [0xffu8, 0x00, 0xfe, b'x'];
    raw_publish(&ch, &topic, "whatever", props, &garbage).await;
    eventually(PATIENCE, "dead-lettering", || {
        consumer.stats().dead_lettered == 1
    })
    .await;
    consumer.shutdown().await.unwrap();
    assert!(
        handled.is_empty(),
        "an undecodable message reached the handler"
    );

    let got = ch
        .basic_get(
            format!("{topic}.g.dlq").as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("a dead letter in the DLQ");
    let d = got.delivery;
    assert_eq!(
        d.data, garbage,
        "the dead letter must be the original bytes"
    );
    assert_eq!(*d.properties.priority(), Some(3));
    assert_eq!(d.properties.app_id().as_ref().unwrap().as_str(), "mystery");
    let headers = d.properties.headers().as_ref().unwrap().inner();
    assert_eq!(
        headers.get("x-origin"),
        Some(&AMQPValue::LongString("legacy".into()))
    );
    assert_eq!(
        headers.get("busway-dlq-reason"),
        Some(&AMQPValue::LongString("undecodable".into()))
    );
    ch.basic_nack(
        d.delivery_tag,
        lapin::options::BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    )
    .await
    .unwrap();
    let peeked = broker.peek(&topic, "g", 10).await.unwrap();
    assert_eq!(peeked.len(), 1);
    assert_eq!(peeked[0].message.data().as_ref(), garbage);
    assert_eq!(
        peeked[0].metadata.as_ref().unwrap().reason,
        DeadLetterReason::Undecodable
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_where_no_queue_listens_is_an_error() {
    let (config, _) = common::config("unroutable").await;
    let broker = common::connect(config.clone()).await;
    let topic = common::unique("unroutable");
    let err = broker.publish(&topic, numbered(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unroutable, "{err}");
    assert!(err.to_string().contains(&topic), "{err}");
    let err = broker
        .publish_batch(&topic, vec![numbered(1), numbered(2)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unroutable, "{err}");

    // Without declared topology a missing exchange is refused by the broker; the publishing
    // channel it closes is replaced for the next publish.
    let bare = common::connect(config.declare_topology(false)).await;
    let err = bare
        .publish(&common::unique("nowhere"), numbered(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unroutable, "{err}");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    bare.publish(&topic, numbered(2))
        .await
        .expect("the publisher recovers from the closed channel");
    next_delivery(&mut sub, PATIENCE).await.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_topology_is_used_without_declaring_anything() {
    let (config, _) = common::config("existing").await;
    let topic = common::unique("existing");
    let bare = common::connect(config.clone().declare_topology(false)).await;
    let err = bare
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .err()
        .expect("no queue to consume");
    assert!(err.to_string().contains(&format!("{topic}.g")), "{err}");
    // Someone else (here: a declaring handle) owns the topology.
    let declaring = common::connect(config).await;
    drop(
        declaring
            .subscribe(&topic, "g", SubscribeOptions::default())
            .await
            .unwrap(),
    );
    let mut sub = bare
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    bare.publish(&topic, numbered(7)).await.unwrap();
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(d.message().data().as_ref(), b"7");
    d.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_broker_closes_the_connections() {
    let (config, name) = common::config("reconnect").await;
    let broker = common::connect(config).await;
    let topic = common::unique("reconnect");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    broker.publish(&topic, numbered(1)).await.unwrap();
    let held = next_delivery(&mut sub, PATIENCE).await;

    assert_eq!(common::close_connections(&name).await, 2);
    // The delivery's channel died with the connection and the broker will redeliver. Once the
    // client has read the broker's close, acking fails: trying again cannot help (the delivery
    // is the broker's again), so the error says the delivery is gone (as Service Bus says of a
    // lost link) rather than inviting retries. The close reaches the client asynchronously, so
    // an ack written just before it is read succeeds locally (basic.ack has no reply) and the
    // broker, which closed the channel first, ignores it: either way the message comes back,
    // which the end of the test asserts.
    if let Err(err) = held.ack().await {
        assert!(
            matches!(err.kind(), ErrorKind::Closed | ErrorKind::Connection),
            "{err}"
        );
    }
    broker
        .publish(&topic, numbered(2))
        .await
        .expect("publishing works again after reconnecting");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let d = next_delivery(&mut sub, PATIENCE).await;
        seen.push((d.message().data().clone(), d.attempt()));
        d.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(seen[0].0.as_ref(), b"1");
    assert_eq!(
        seen[0].1, 2,
        "the unacked message comes back as a redelivery"
    );
    assert_eq!(seen[1].0.as_ref(), b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_during_an_outage_waits_then_fails_clearly() {
    let upstream = url::Url::parse(&common::url().await).unwrap();
    let addr = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(5672)
    );
    let upstream_addr = tokio::net::lookup_host(addr).await.unwrap().next().unwrap();
    let proxy = common::proxy::Proxy::start(upstream_addr).await;
    let mut via_proxy = upstream.clone();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let reconnect = ReconnectConfig::new(Duration::from_millis(20), Duration::from_millis(200));
    let config = RabbitMqConfig::new(via_proxy.as_str()).reconnect(reconnect);
    let hasty = common::connect(config.clone().publish_timeout(Duration::from_secs(1))).await;
    // For the publish that must outlive the outage: its bound is far beyond anything a loaded
    // machine could take to bring the proxy back.
    let patient = common::connect(config.publish_timeout(Duration::from_secs(120))).await;
    let topic = common::unique("outage");
    let mut sub = hasty
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();

    proxy.down();
    let started = Instant::now();
    let err = hasty.publish(&topic, numbered(1)).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("not confirmed within"), "{err}");
    assert!(
        !err.to_string().contains("guest:guest"),
        "secrets in an error: {err}"
    );
    // Causality, not speed: it gave up only once its bound was spent (how much later depends on
    // the machine's load, and is for benchmarks to measure).
    assert!(
        waited >= Duration::from_millis(900),
        "gave up after {waited:?}, before its publish timeout of 1 s"
    );

    // A publish that starts during the outage and outlives it succeeds.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let publishing = {
        let patient = patient.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let _ = started_tx.send(());
            patient.publish(&topic, numbered(2)).await
        })
    };
    started_rx.await.unwrap();
    assert!(
        !publishing.is_finished(),
        "a publish cannot complete while the broker is unreachable"
    );
    proxy.up().await;
    publishing
        .await
        .unwrap()
        .expect("the publish waits for the reconnection");
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(
        d.message().data().as_ref(),
        b"2",
        "the failed publish must not have been sent"
    );
    d.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_count_deliveries() {
    let (config, _) = common::config("quorum").await;
    let broker = common::connect(config.queue_type(QueueType::Quorum)).await;
    let topic = common::unique("quorum");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();
    broker.publish(&topic, numbered(1)).await.unwrap();
    let first = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(first.attempt(), 1);
    drop(first); // given back with a nack: the quorum queue counts it
    let second = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(second.attempt(), 2);
    second.redeliver(Duration::from_millis(100)).await.unwrap(); // through a quorum wait queue
    let third = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(third.attempt(), 3);
    assert!(third.info().first_failure.is_some());
    third.ack().await.unwrap();

    // The group's queue really is a quorum queue: redeclaring it as classic conflicts.
    let classic = common::connect(common::config("quorum").await.0).await;
    let err = classic
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_groups_have_a_single_active_consumer() {
    let (config, _) = common::config("sac").await;
    let broker = common::connect(config).await;
    let topic = common::unique("sac");
    let ordered = SubscribeOptions::default().ordering(Ordering::PerKey);
    let mut first = broker
        .subscribe(&topic, "g", ordered.clone())
        .await
        .unwrap();
    let mut second = broker.subscribe(&topic, "g", ordered).await.unwrap();
    for n in 0..6 {
        broker.publish(&topic, numbered(n)).await.unwrap();
    }
    for n in 0..6 {
        let d = next_delivery(&mut first, PATIENCE).await;
        assert_eq!(
            d.message().data().as_ref(),
            n.to_string().as_bytes(),
            "in order, all to the active one"
        );
        d.ack().await.unwrap();
    }
    // The active consumer received all six, in order, so the standby received none of them;
    // once the active one closes, the standby takes over with the next message.
    first.close().await.unwrap();
    broker.publish(&topic, numbered(6)).await.unwrap();
    let d = next_delivery(&mut second, PATIENCE).await;
    assert_eq!(d.message().data().as_ref(), b"6", "the standby takes over");
    d.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_to_connect_are_classified() {
    let url = url::Url::parse(&common::url().await).unwrap();
    let mut wrong = url.clone();
    wrong.set_password(Some("not-the-password")).unwrap();
    let err = RabbitMqBroker::connect(RabbitMqConfig::new(wrong.as_str()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");

    let free_port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = RabbitMqBroker::connect(RabbitMqConfig::new(format!(
        "amqp://guest:guest@127.0.0.1:{free_port}/%2f"
    )))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");

    // TLS (rustls) is attempted for amqps://: a plain AMQP port fails the handshake.
    let mut tls = url.clone();
    tls.set_scheme("amqps").unwrap();
    let err = RabbitMqBroker::connect(RabbitMqConfig::new(tls.as_str()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");

    let err = RabbitMqBroker::connect(RabbitMqConfig::new("http://example.com"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_redrive_only_to_their_group() {
    let (config, _) = common::config("redrive").await;
    let broker = common::connect(config).await;
    let topic = common::unique("redrive");
    let failing = Recorder::default();
    let failing_consumer =
        busway_core::Consumer::builder(Arc::new(broker.clone()), &topic, "failing")
            .start(handler_fn({
                let failing = failing.clone();
                move |m: Message| {
                    let failing = failing.clone();
                    async move {
                        failing.record(m);
                        Err::<(), _>(HandlerError::permanent("nope"))
                    }
                }
            }))
            .await
            .unwrap();
    let mut other = broker
        .subscribe(&topic, "other", SubscribeOptions::default())
        .await
        .unwrap();
    broker.publish(&topic, numbered(1)).await.unwrap();
    next_delivery(&mut other, PATIENCE)
        .await
        .ack()
        .await
        .unwrap();
    eventually(PATIENCE, "dead-lettering", || {
        failing_consumer.stats().dead_lettered == 1
    })
    .await;
    failing_consumer.shutdown().await.unwrap();

    assert_eq!(broker.redrive(&topic, "failing", None).await.unwrap(), 1);
    let mut failing_sub = broker
        .subscribe(&topic, "failing", SubscribeOptions::default())
        .await
        .unwrap();
    let d = next_delivery(&mut failing_sub, PATIENCE).await;
    assert_eq!(
        d.attempt(),
        1,
        "a redriven message starts a fresh set of attempts"
    );
    d.ack().await.unwrap();
    // Ordering, not a quiet period: a redrive through the topic would reach the other group
    // before this later message does.
    broker.publish(&topic, numbered(2)).await.unwrap();
    let d = next_delivery(&mut other, PATIENCE).await;
    assert_eq!(
        d.message().data().as_ref(),
        b"2",
        "the other group must not see the redriven message again"
    );
    d.ack().await.unwrap();
    assert_eq!(broker.purge(&topic, "failing").await.unwrap(), 0);
}

/// RabbitMQ queues keep no history: asking a group to start at the earliest message is refused
/// when subscribing, naming the setting, rather than quietly starting at the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earliest_start_position_is_refused_at_subscribe() {
    let (config, _) = common::config("earliest").await;
    let broker = common::connect(config).await;
    let topic = common::unique("earliest");
    let err = broker
        .subscribe(
            &topic,
            "g",
            SubscribeOptions::default().start(busway_core::StartPosition::Earliest),
        )
        .await
        .err()
        .expect("`earliest` must be refused");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("start_position"), "{err}");
    assert!(!broker.capabilities().replays_history);
}
