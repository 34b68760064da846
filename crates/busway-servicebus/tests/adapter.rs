//! What is specific to Service Bus: sessions, lock renewal, duplicate detection, native
//! dead-lettering seen by the plain client, routing of delayed redeliveries, foreign messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azservicebus::{ServiceBusMessage, ServiceBusReceiverOptions, SubQueue};
use busway_core::{
    Backoff, Consumer, DeadLetterReason, DeadLetters, ErrorKind, HandlerError, Incoming, Message,
    Publisher, RedeliveryPolicy, RetryPolicy, SubscribeOptions, Subscriber, handler_fn,
};
use busway_servicebus::{ServiceBusBroker, ServiceBusConfig};
use busway_testkit::conformance::support::{eventually, next_delivery};

const PATIENCE: Duration = Duration::from_secs(30);

fn keyed(key: &str, n: usize) -> Message {
    Message::builder("/adapter", "keyed")
        .partition_key(key)
        .json(&serde_json::json!({ "n": n }))
        .unwrap()
        .build()
        .unwrap()
}

fn number(m: &Message) -> usize {
    m.decode_json::<serde_json::Value>().unwrap()["n"]
        .as_u64()
        .unwrap() as usize
}

fn consumer(broker: &ServiceBusBroker, topic: &str, group: &str) -> busway_core::ConsumerBuilder {
    let subscriber: Arc<dyn Subscriber> = Arc::new(broker.clone());
    Consumer::builder(subscriber, topic, group)
        .retry(RetryPolicy::none())
        .drain_timeout(Duration::from_secs(10))
}

/// Messages of one key arrive through one session, in publish order, one at a time; keys run in
/// parallel; the session id is the partition key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_order_per_key() {
    let server = common::server().await;
    server.reset("adapter-sessions", &["ordered"]).await;
    let broker = server.broker().await;
    let seen: Arc<Mutex<BTreeMap<String, Vec<usize>>>> = Arc::default();
    let keys_match = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (seen, keys_match) = (seen.clone(), keys_match.clone());
        handler_fn(move |inc: Incoming| {
            let (seen, keys_match) = (seen.clone(), keys_match.clone());
            async move {
                let key = inc.message.partition_key().unwrap().to_owned();
                if inc.info.ordering_key.as_deref() == Some(key.as_str()) {
                    keys_match.fetch_add(1, AtomicOrdering::SeqCst);
                }
                let n = number(&inc.message);
                tokio::time::sleep(Duration::from_millis((n % 4) as u64 * 5)).await;
                seen.lock().unwrap().entry(key).or_default().push(n);
                Ok::<_, HandlerError>(())
            }
        })
    };
    let c = consumer(&broker, "adapter-sessions", "ordered")
        .ordered_by_key()
        .concurrency(8)
        .start(handler)
        .await
        .unwrap();
    let keys = ["k1", "k2", "k3", "k4"];
    let batch: Vec<Message> = (0..80).map(|i| keyed(keys[i % keys.len()], i)).collect();
    broker
        .publish_batch("adapter-sessions", batch)
        .await
        .unwrap();
    eventually(PATIENCE, "every keyed message", || {
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>() >= 80
    })
    .await;
    c.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    for key in keys {
        let got = &seen[key];
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, &sorted, "session {key} out of order");
        assert_eq!(got.len(), 20);
    }
    assert_eq!(
        keys_match.load(AtomicOrdering::SeqCst),
        80,
        "ordering key = session id = partition key"
    );
}

/// A handler that runs longer than the lock keeps its delivery: the lock is renewed, the message
/// is neither redelivered to another member nor counted as a second attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_keeps_its_lock() {
    let server = common::server().await;
    server.reset("adapter-slow", &["g"]).await;
    let broker = server.broker().await;
    let lock = server.short_lock();
    let calls: Arc<Mutex<Vec<u32>>> = Arc::default();
    let handler = {
        let calls = calls.clone();
        handler_fn(move |inc: Incoming| {
            let calls = calls.clone();
            async move {
                calls.lock().unwrap().push(inc.info.attempt);
                tokio::time::sleep(lock * 3).await;
                Ok::<_, HandlerError>(())
            }
        })
    };
    // Two members: an expired lock would hand the message to the other one.
    let c1 = consumer(&broker, "adapter-slow", "g")
        .concurrency(1)
        .start(handler.clone())
        .await
        .unwrap();
    let c2 = consumer(&broker, "adapter-slow", "g")
        .concurrency(1)
        .start(handler)
        .await
        .unwrap();
    let m = Message::builder("/adapter", "slow")
        .data("x")
        .build()
        .unwrap();
    broker.publish("adapter-slow", m).await.unwrap();
    eventually(lock * 3 + PATIENCE, "the slow message acked", || {
        c1.stats().acked + c2.stats().acked == 1
    })
    .await;
    tokio::time::sleep(lock * 2).await;
    let report1 = c1.shutdown().await.unwrap();
    let report2 = c2.shutdown().await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        vec![1],
        "the lock expired and the message came back"
    );
    assert_eq!(report1.stats.received + report2.stats.received, 1);
    if let Some(emulator) = &server.emulator {
        assert_eq!(
            emulator.message_counts("adapter-slow/Subscriptions/g"),
            Some((0, 0))
        );
    }
}

/// A handler that runs longer than its session's lock keeps the session: the session lock is
/// renewed in time from the first renewal on (Service Bus states the session's first expiry in
/// .NET ticks, which the client reads as a date in year 1), so the message is not handed to the
/// other member and not counted as a second attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_keeps_its_session_lock() {
    let server = common::server().await;
    server.reset("adapter-slow-session", &["ordered"]).await;
    let broker = server.broker().await;
    let lock = server.short_lock();
    let calls: Arc<Mutex<Vec<u32>>> = Arc::default();
    let handler = {
        let calls = calls.clone();
        handler_fn(move |inc: Incoming| {
            let calls = calls.clone();
            async move {
                calls.lock().unwrap().push(inc.info.attempt);
                tokio::time::sleep(lock * 3).await;
                Ok::<_, HandlerError>(())
            }
        })
    };
    let c1 = consumer(&broker, "adapter-slow-session", "ordered")
        .ordered_by_key()
        .concurrency(1)
        .start(handler.clone())
        .await
        .unwrap();
    let c2 = consumer(&broker, "adapter-slow-session", "ordered")
        .ordered_by_key()
        .concurrency(1)
        .start(handler)
        .await
        .unwrap();
    broker
        .publish("adapter-slow-session", keyed("k1", 1))
        .await
        .unwrap();
    eventually(lock * 3 + PATIENCE, "the slow message acked", || {
        c1.stats().acked + c2.stats().acked == 1
    })
    .await;
    tokio::time::sleep(lock * 2).await;
    c1.shutdown().await.unwrap();
    c2.shutdown().await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        vec![1],
        "the session lock expired and the message came back"
    );
}

/// With duplicate detection on the topic, a message re-published with the same CloudEvents id
/// (the MessageId) is absorbed by the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_drops_a_republished_id() {
    let server = common::server().await;
    server.reset("adapter-dedup", &["g"]).await;
    let broker = server.broker().await;
    let mut sub = broker
        .subscribe("adapter-dedup", "g", SubscribeOptions::default())
        .await
        .unwrap();
    let m = Message::builder("/adapter", "dedup")
        .data("once")
        .build()
        .unwrap();
    broker.publish("adapter-dedup", m.clone()).await.unwrap();
    broker.publish("adapter-dedup", m.clone()).await.unwrap();
    let other = Message::builder("/adapter", "dedup")
        .data("other")
        .build()
        .unwrap();
    broker
        .publish("adapter-dedup", other.clone())
        .await
        .unwrap();
    let first = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(first.message(), &m);
    first.ack().await.unwrap();
    let second = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(second.message(), &other, "the duplicate was delivered");
    second.ack().await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
    assert!(quiet.is_err(), "something more arrived");
}

/// A dead-lettered message sits in the native dead-letter subqueue, where the plain client sees
/// the original body, DeadLetterReason, DeadLetterErrorDescription and busway's metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_native() {
    let server = common::server().await;
    server.reset("adapter-dlq", &["g"]).await;
    let broker = server.broker().await;
    let c = consumer(&broker, "adapter-dlq", "g")
        .start(handler_fn(|_m: Message| async move {
            Err::<(), _>(HandlerError::permanent("order 7 does not exist"))
        }))
        .await
        .unwrap();
    let m = Message::builder("/adapter", "doomed")
        .datacontenttype("application/octet-stream")
        .data(vec![0u8, 1, 2, 255])
        .build()
        .unwrap();
    broker.publish("adapter-dlq", m.clone()).await.unwrap();
    eventually(PATIENCE, "dead-lettering", || c.stats().dead_lettered == 1).await;
    c.shutdown().await.unwrap();

    let mut client = server.raw_client().await;
    let mut receiver = client
        .create_receiver_for_subscription(
            "adapter-dlq",
            "g",
            ServiceBusReceiverOptions {
                sub_queue: SubQueue::DeadLetter,
                ..ServiceBusReceiverOptions::default()
            },
        )
        .await
        .unwrap();
    let dead = receiver
        .receive_message_with_max_wait_time(PATIENCE)
        .await
        .unwrap()
        .expect("a dead letter");
    assert_eq!(dead.dead_letter_reason(), Some("permanent_error"));
    assert!(
        dead.dead_letter_error_description()
            .unwrap()
            .contains("order 7 does not exist")
    );
    assert_eq!(dead.body().unwrap(), &[0u8, 1, 2, 255]);
    assert_eq!(dead.message_id().unwrap(), m.id());
    let props = dead.application_properties().unwrap();
    let text = |k: &str| match props.0.get(k) {
        Some(fe2o3_amqp_types::primitives::SimpleValue::String(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("busway-dlq-topic"), "adapter-dlq");
    assert_eq!(text("busway-dlq-group"), "g");
    assert_eq!(text("busway-dlq-attempts"), "1");
    assert_eq!(text("cloudEvents_id"), m.id());
    receiver.abandon_message(&dead, None).await.unwrap();
    receiver.dispose().await.unwrap();
    client.dispose().await.unwrap();

    let peeked = broker.peek("adapter-dlq", "g", 10).await.unwrap();
    assert_eq!(peeked.len(), 1);
    assert_eq!(peeked[0].message, m);
    assert_eq!(
        peeked[0].metadata.as_ref().unwrap().reason,
        DeadLetterReason::PermanentError
    );
    assert_eq!(broker.purge("adapter-dlq", "g").await.unwrap(), 1);
}

/// A message no CloudEvent can be read from reaches the runtime flagged, and is dead-lettered
/// unchanged with reason `undecodable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_messages_are_dead_lettered_unchanged() {
    let server = common::server().await;
    server.reset("adapter-undecodable", &["g"]).await;
    let broker = server.broker().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let c = consumer(&broker, "adapter-undecodable", "g")
        .start({
            let handled = handled.clone();
            handler_fn(move |_m: Message| {
                let handled = handled.clone();
                async move {
                    handled.fetch_add(1, AtomicOrdering::SeqCst);
                    Ok::<_, HandlerError>(())
                }
            })
        })
        .await
        .unwrap();
    let mut client = server.raw_client().await;
    let mut sender = client
        .create_sender("adapter-undecodable", Default::default())
        .await
        .unwrap();
    let mut foreign = ServiceBusMessage::new(b"not a cloud event".to_vec());
    foreign.set_message_id("foreign-1").unwrap();
    sender.send_message(foreign).await.unwrap();
    sender.dispose().await.unwrap();
    client.dispose().await.unwrap();
    eventually(PATIENCE, "dead-lettering", || c.stats().dead_lettered == 1).await;
    c.shutdown().await.unwrap();
    assert_eq!(
        handled.load(AtomicOrdering::SeqCst),
        0,
        "the handler saw an undecodable message"
    );
    let dead = broker.peek("adapter-undecodable", "g", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.data().as_ref(), b"not a cloud event");
    let meta = dead[0].metadata.as_ref().unwrap();
    assert_eq!(meta.reason, DeadLetterReason::Undecodable);
    broker.purge("adapter-undecodable", "g").await.unwrap();
}

/// A delayed redelivery is a scheduled copy addressed to its group: the group gets it with the
/// next attempt number; the topic's other groups do not see it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_redelivery_reaches_only_its_group() {
    let server = common::server().await;
    server.reset("adapter-routing", &["a", "b"]).await;
    let broker = server.broker().await;
    let a_attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let b_seen = Arc::new(AtomicUsize::new(0));
    let a = consumer(&broker, "adapter-routing", "a")
        .redelivery(RedeliveryPolicy::new(
            3,
            Backoff::Fixed {
                delay: Duration::from_millis(500),
            },
        ))
        .start({
            let a_attempts = a_attempts.clone();
            handler_fn(move |inc: Incoming| {
                let a_attempts = a_attempts.clone();
                async move {
                    a_attempts.lock().unwrap().push(inc.info.attempt);
                    if inc.info.attempt == 1 {
                        return Err(HandlerError::transient("later"));
                    }
                    assert!(inc.info.first_failure.is_some());
                    Ok(())
                }
            })
        })
        .await
        .unwrap();
    let b = consumer(&broker, "adapter-routing", "b")
        .start({
            let b_seen = b_seen.clone();
            handler_fn(move |_m: Message| {
                let b_seen = b_seen.clone();
                async move {
                    b_seen.fetch_add(1, AtomicOrdering::SeqCst);
                    Ok::<_, HandlerError>(())
                }
            })
        })
        .await
        .unwrap();
    let m = Message::builder("/adapter", "routed")
        .data("x")
        .build()
        .unwrap();
    broker.publish("adapter-routing", m).await.unwrap();
    eventually(PATIENCE, "the redelivered copy acked", || {
        a.stats().acked == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    assert_eq!(*a_attempts.lock().unwrap(), vec![1, 2]);
    assert_eq!(
        b_seen.load(AtomicOrdering::SeqCst),
        1,
        "the copy reached another group"
    );
}

/// Oversized messages and bad settings fail with classified errors, before anything is sent;
/// the publish limit keeps room for the metadata a redelivery or a dead letter adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified() {
    let server = common::server().await;
    let limit = 16 * 1024;
    let broker = ServiceBusBroker::connect(ServiceBusConfig {
        max_message_bytes: limit,
        ..server.config.clone()
    })
    .await
    .unwrap();
    let big = Message::builder("/adapter", "big")
        .data(vec![7u8; limit])
        .build()
        .unwrap();
    let err = broker.publish("adapter-dlq", big).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    // Under the broker's limit but inside the headroom: a dead letter of it would not fit.
    let near = Message::builder("/adapter", "near")
        .data(vec![7u8; limit - 2048])
        .build()
        .unwrap();
    let err = broker.publish("adapter-dlq", near).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    let err = broker
        .subscribe("no-such-topic", "g", SubscribeOptions::default())
        .await
        .err()
        .expect("an unknown subscription is refused");
    assert_eq!(err.kind(), ErrorKind::Unroutable, "{err}");
    let m = Message::builder("/adapter", "lost").build().unwrap();
    let err = broker.publish("no-such-topic", m).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unroutable, "{err}");
    let err = ServiceBusBroker::connect(ServiceBusConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("servicebus."), "{err}");
    let err = ServiceBusBroker::connect(ServiceBusConfig {
        max_message_bytes: 1024,
        ..server.config.clone()
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("servicebus.max_message_bytes"),
        "{err}"
    );
}

/// `docker/Config.json` (what the official emulator and a real namespace must declare) is
/// exactly the entities the in-process fixture declares, and the emulator reads it.
/// `BUSWAY_WRITE_DOCKER_CONFIG=1` rewrites it after a change to `common::entities`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_config_declares_the_test_entities() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/Config.json");
    let want = common::docker_config();
    if std::env::var_os("BUSWAY_WRITE_DOCKER_CONFIG").is_some() {
        let text = serde_json::to_string_pretty(&want).unwrap() + "\n";
        std::fs::write(path, text).unwrap();
    }
    let have: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        have == want,
        "docker/Config.json differs from common::entities(): rerun this test with BUSWAY_WRITE_DOCKER_CONFIG=1"
    );
    let emulator = busway_sb_emulator::Emulator::from_config_file(path)
        .expect("Config.json parses")
        .start()
        .await
        .unwrap();
    for topic in common::entities() {
        for sub in &topic.subscriptions {
            let path = format!("{}/Subscriptions/{}", topic.name, sub.name);
            assert!(
                emulator.message_counts(&path).is_some(),
                "{path} is missing"
            );
        }
    }
    emulator.shutdown().await;
}
