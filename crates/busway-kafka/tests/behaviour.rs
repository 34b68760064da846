//! Kafka-specific behaviour beyond the conformance suite, on the shared test broker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busway_core::{
    CircuitBreakerConfig, CircuitState, Consumer, DeadLetterReason, DeadLetters, HandlerError,
    Message, Publisher, RetryPolicy, StartPosition, SubscribeOptions, Subscriber, handler_fn,
};
use busway_testkit::conformance::support::{eventually, numbered, unique};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// While the circuit is open the runtime stops pulling and the adapter pauses its partitions;
/// once it closes, every message is handled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_circuit_pauses_partitions_without_loss() {
    let broker = common::shared_broker().await;
    let topic = unique("breaker");
    let failing = Arc::new(AtomicBool::new(true));
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let breaker = busway_core::CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 1,
        cool_down: Duration::from_secs(3),
    });
    let handler = {
        let (failing, seen) = (failing.clone(), seen.clone());
        handler_fn(move |m: Message| {
            let (failing, seen) = (failing.clone(), seen.clone());
            async move {
                if failing.swap(false, AtomicOrdering::SeqCst) {
                    return Err(HandlerError::transient("dependency down"));
                }
                *seen.lock().unwrap().entry(m.id().to_owned()).or_default() += 1;
                Ok(())
            }
        })
    };
    let consumer = Consumer::builder(Arc::new(broker.clone()), &topic, unique("g"))
        .retry(RetryPolicy::none())
        .circuit_breaker_shared(breaker.clone())
        .start(handler)
        .await
        .expect("start");
    let sent: Vec<Message> = (0..60).map(numbered).collect();
    broker.publish(&topic, sent[0].clone()).await.unwrap();
    eventually(Duration::from_secs(30), "the circuit to open", || {
        breaker.state() == CircuitState::Open
    })
    .await;
    // Published while nothing is pulled: they wait in Kafka, not in memory.
    broker
        .publish_batch(&topic, sent[1..].to_vec())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "every message after the circuit closed",
        || {
            sent[1..]
                .iter()
                .all(|m| seen.lock().unwrap().contains_key(m.id()))
                && seen.lock().unwrap().contains_key(sent[0].id())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    consumer.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 60);
    assert!(
        seen.values().all(|n| *n == 1),
        "a message was handled twice: {seen:?}"
    );
}

/// A record that is no CloudEvent reaches the runtime as undecodable and is dead-lettered
/// byte for byte, its own headers kept, with the standard metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_record_is_dead_lettered_unchanged() {
    let broker = common::shared_broker().await;
    let topic = unique("garbage");
    let group = unique("g");
    let consumer = Consumer::builder(Arc::new(broker.clone()), &topic, &group)
        .start(handler_fn(|_m: Message| async {
            Ok::<_, HandlerError>(())
        }))
        .await
        .expect("start");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.config().bootstrap_servers)
        .create()
        .unwrap();
    let value: &[u8] = &[0xde, 0xad, 0x00, 0xff];
    producer
        .send(
            FutureRecord::to(&topic)
                .key("k")
                .payload(value)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "x-origin",
                    value: Some("legacy"),
                })),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    eventually(Duration::from_secs(30), "the dead letter", || {
        consumer.stats().dead_lettered == 1
    })
    .await;
    consumer.shutdown().await.unwrap();
    let dead = broker.peek(&topic, &group, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.data().as_ref(), value);
    let meta = dead[0].metadata.as_ref().expect("metadata");
    assert_eq!(meta.reason, DeadLetterReason::Undecodable);
    assert_eq!(meta.original_topic, topic);
    assert_eq!(meta.attempts, 1);

    // The DLQ record itself: same key, value and header as the original.
    let mut dlq_sub = broker
        .subscribe(
            &format!("{topic}.{group}.dlq"),
            "inspect",
            SubscribeOptions::default().start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let d =
        busway_testkit::conformance::support::next_delivery(&mut dlq_sub, Duration::from_secs(30))
            .await;
    assert!(d.decode_error().is_some());
    assert_eq!(d.message().data().as_ref(), value);
    d.ack().await.unwrap();
}
