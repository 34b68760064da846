//! Fault injection on librdkafka's mock cluster: request errors, leader changes, a broker going
//! down and up, added latency. Each test publishes while the fault is active (a failed publish is
//! retried with the same message until `publish` acknowledges it), then counts, against the ids
//! it published: messages lost (never handled), messages handled twice behind the dedup
//! middleware, messages handled that were never published, and deliveries that reached the
//! consumer more than once (before dedup). Lost, duplicated and unknown must be zero; repeated
//! deliveries are reported (at-least-once allows them, dedup absorbs them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use busway_core::{
    Backoff, Claim, Consumer, ConsumerHandle, HandlerError, IdempotencyStore,
    MemoryIdempotencyStore, Message, Publisher, RedeliveryPolicy, RetryPolicy, StartPosition,
    handler_fn,
};
use busway_kafka::{KafkaBroker, KafkaConfig};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::time::Instant;

const TOPIC: &str = "faults";
const GROUP: &str = "g";
const PARTITIONS: i32 = 4;
const MESSAGES: usize = 300;

/// A mock cluster of three brokers with the topic and everything busway derives from it.
fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(3).expect("mock cluster");
    let mut topics = vec![
        TOPIC.to_owned(),
        format!("{TOPIC}.scheduled"),
        format!("{TOPIC}.{GROUP}.dlq"),
    ];
    topics.extend((1..=3).map(|n| format!("{TOPIC}.{GROUP}.retry.{n}")));
    for t in &topics {
        mock.create_topic(t, PARTITIONS, 3).expect("create topic");
    }
    mock
}

async fn connect(mock: &MockCluster<'static, DefaultProducerContext>) -> KafkaBroker {
    KafkaBroker::connect(KafkaConfig {
        create_topics: false,
        delivery_timeout: Duration::from_secs(60),
        ..common::config(&mock.bootstrap_servers())
    })
    .await
    .expect("connect to the mock cluster")
}

/// Per message id: deliveries that reached the dedup middleware, and handler invocations
/// behind it.
#[derive(Clone, Default)]
struct Tally {
    deliveries: Arc<Mutex<HashMap<String, usize>>>,
    calls: Arc<Mutex<HashMap<String, usize>>>,
}

impl Tally {
    fn distinct(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    /// Handler invocations beyond the first, per message: what dedup let through twice.
    fn duplicates(&self) -> usize {
        self.calls.lock().unwrap().values().map(|n| n - 1).sum()
    }
    /// Deliveries beyond the first, per message, before dedup.
    fn repeated_deliveries(&self) -> usize {
        self.deliveries
            .lock()
            .unwrap()
            .values()
            .map(|n| n - 1)
            .sum()
    }
    fn missing(&self, published: &HashSet<String>) -> usize {
        let calls = self.calls.lock().unwrap();
        published
            .iter()
            .filter(|id| !calls.contains_key(*id))
            .count()
    }
    /// Handled, but never published by the test.
    fn unknown(&self, published: &HashSet<String>) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.keys().filter(|id| !published.contains(*id)).count()
    }
}

/// The dedup store, counting every delivery that reaches it.
struct CountingStore {
    inner: MemoryIdempotencyStore,
    tally: Tally,
}

#[async_trait]
impl IdempotencyStore for CountingStore {
    async fn begin(&self, group: &str, key: &str) -> busway_core::Result<Claim> {
        *self
            .tally
            .deliveries
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
        self.inner.begin(group, key).await
    }
    async fn complete(&self, group: &str, key: &str) -> busway_core::Result<()> {
        self.inner.complete(group, key).await
    }
    async fn abandon(&self, group: &str, key: &str) -> busway_core::Result<()> {
        self.inner.abandon(group, key).await
    }
}

async fn start_consumer(broker: &KafkaBroker, tally: &Tally) -> ConsumerHandle {
    let tally = tally.clone();
    Consumer::builder(Arc::new(broker.clone()), TOPIC, GROUP)
        .start_position(StartPosition::Earliest)
        .concurrency(8)
        .retry(RetryPolicy::none())
        .redelivery(RedeliveryPolicy::new(
            5,
            Backoff::Fixed {
                delay: Duration::from_millis(200),
            },
        ))
        .dedup(Arc::new(CountingStore {
            inner: MemoryIdempotencyStore::default(),
            tally: tally.clone(),
        }))
        .start(handler_fn(move |m: Message| {
            let tally = tally.clone();
            async move {
                *tally
                    .calls
                    .lock()
                    .unwrap()
                    .entry(m.id().to_owned())
                    .or_default() += 1;
                Ok::<_, HandlerError>(())
            }
        }))
        .await
        .expect("start consumer")
}

/// Publishes `MESSAGES` messages, retrying a failed publish with the same message (the client
/// was disturbed, not the message bad) until it is acknowledged; returns the ids published.
async fn publish_all(broker: &KafkaBroker, during: impl Fn(usize)) -> HashSet<String> {
    let mut published = HashSet::new();
    // Ten at a time, so that added latency does not make the test crawl.
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(10) {
        for &i in chunk {
            during(i);
        }
        published.extend(publish_range(broker, chunk[0]..chunk[chunk.len() - 1] + 1).await);
    }
    published
}

async fn publish_range(broker: &KafkaBroker, range: std::ops::Range<usize>) -> Vec<String> {
    futures::future::join_all(range.map(|i| publish_one(broker, i))).await
}

async fn publish_one(broker: &KafkaBroker, i: usize) -> String {
    let m = Message::builder("/faults", "fault.test")
        .partition_key(format!("k{}", i % 16))
        .json(&serde_json::json!({ "n": i }))
        .unwrap()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match broker.publish(TOPIC, m.clone()).await {
            Ok(()) => return m.id().to_owned(),
            Err(e) => {
                assert!(Instant::now() < deadline, "publish kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits for every published message, then reports and checks what was lost, duplicated or
/// unknown.
async fn settle_and_check(
    name: &str,
    consumer: ConsumerHandle,
    tally: &Tally,
    published: &HashSet<String>,
) {
    assert_eq!(
        published.len(),
        MESSAGES,
        "{name}: the test publishes distinct ids"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while tally.missing(published) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = consumer.shutdown().await.expect("shutdown");
    let lost = tally.missing(published);
    let duplicates = tally.duplicates();
    let unknown = tally.unknown(published);
    let repeated = tally.repeated_deliveries();
    println!(
        "fault {name}: published {MESSAGES} handled {} lost {lost} duplicated behind dedup {duplicates} unknown {unknown} repeated deliveries {repeated} (deliveries received {})",
        tally.distinct(),
        report.stats.received
    );
    assert_eq!(lost, 0, "{name}: published messages were lost");
    assert_eq!(
        duplicates, 0,
        "{name}: duplicates reached the handler behind dedup"
    );
    assert_eq!(unknown, 0, "{name}: handled messages nobody published");
    assert!(
        report.stats.received as usize >= MESSAGES + repeated,
        "{name}: the runtime counted fewer deliveries than reached dedup"
    );
    // The subscription leaves its group in the background; the mock cluster must outlive that.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// One fault scenario: a mock cluster, a broker handle on it and a consumer behind dedup counting
/// what reaches its handler.
struct Run {
    mock: MockCluster<'static, DefaultProducerContext>,
    broker: KafkaBroker,
    tally: Tally,
    consumer: ConsumerHandle,
}

impl Run {
    async fn start() -> Self {
        let mock = cluster();
        let broker = connect(&mock).await;
        let tally = Tally::default();
        let consumer = start_consumer(&broker, &tally).await;
        Self {
            mock,
            broker,
            tally,
            consumer,
        }
    }

    /// Waits for every acknowledged message, then checks that none was lost or duplicated.
    async fn check(self, name: &str, published: &HashSet<String>) {
        let Self {
            mock,
            broker,
            tally,
            consumer,
        } = self;
        settle_and_check(name, consumer, &tally, published).await;
        // The cluster goes last: clients on it shut down while it still answers.
        drop(broker);
        drop(mock);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_produce_errors() {
    let run = Run::start().await;
    let (mock, broker) = (&run.mock, &run.broker);
    let published = publish_all(broker, |i| {
        if i % 50 == 10 {
            mock.request_errors(
                RDKafkaApiKey::Produce,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
                ],
            );
        }
    })
    .await;
    run.check("transient produce errors", &published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_fetch_and_commit_errors() {
    let run = Run::start().await;
    let (mock, broker) = (&run.mock, &run.broker);
    let published = publish_all(broker, |i| {
        if i % 50 == 10 {
            mock.request_errors(
                RDKafkaApiKey::Fetch,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
                ],
            );
            mock.request_errors(
                RDKafkaApiKey::OffsetCommit,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                ],
            );
        }
    })
    .await;
    run.check("transient fetch/commit errors", &published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_changes_and_not_leader_errors() {
    let run = Run::start().await;
    let (mock, broker) = (&run.mock, &run.broker);
    let published = publish_all(broker, |i| {
        if i % 60 == 20 {
            let leader = (i / 60) as i32 % 3 + 1;
            for p in 0..PARTITIONS {
                mock.partition_leader(TOPIC, p, Some(leader))
                    .expect("move leader");
            }
            mock.request_errors(
                RDKafkaApiKey::Produce,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 2],
            );
            mock.request_errors(
                RDKafkaApiKey::Fetch,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 2],
            );
        }
    })
    .await;
    run.check("leader change / NOT_LEADER", &published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_then_up() {
    let run = Run::start().await;
    let (mock, broker) = (&run.mock, &run.broker);
    let mut published = HashSet::new();
    // Each broker in turn goes down for 3 s while publishing goes on, then comes back.
    for (round, id) in [1, 2, 3].into_iter().enumerate() {
        let base = round * 100;
        published.extend(publish_range(broker, base..base + 30).await);
        mock.broker_down(id).expect("broker down");
        let (during, ()) = tokio::join!(publish_range(broker, base + 30..base + 100), async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            mock.broker_up(id).expect("broker up");
        });
        published.extend(during);
    }
    run.check("broker down then up", &published).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency() {
    let run = Run::start().await;
    let (mock, broker) = (&run.mock, &run.broker);
    for id in 1..=3 {
        mock.broker_round_trip_time(id, Duration::from_millis(150))
            .expect("latency");
    }
    let published = publish_all(broker, |_| {}).await;
    run.check("added latency (150 ms per request)", &published)
        .await;
}
