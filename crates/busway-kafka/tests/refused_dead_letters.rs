//! Settlements the broker refuses, on librdkafka's mock cluster: a topic can be made to answer
//! every metadata request with TOPIC_AUTHORIZATION_FAILED, so that producing to it fails (as
//! with a missing ACL) while every other topic works. tansu has no such fault.
//!
//! - `failed_settlement_neither_loses_nor_freezes` (conformance): the group's DLQ refuses.
//! - A dead letter refused and its fallback redelivery refused too: the runtime gives the
//!   delivery up (drops it); the record comes back, nothing is lost, and commits go on once
//!   the broker takes the dead letter.
//! - A refused settlement keeps the record with its handle; dropped, it comes back counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::mpsc as sync_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busway_core::{
    Backoff, Consumer, DeadLetterMetadata, DeadLetterReason, DeadLetters, HandlerError, Publisher,
    RedeliveryPolicy, RetryPolicy, Settlement, StartPosition, SubscribeOptions, Subscriber,
    handler_fn,
};
use busway_kafka::{KafkaBroker, KafkaConfig};
use busway_testkit::conformance::support::{
    eventually, next_delivery, number_of, numbered, unique,
};
use busway_testkit::{Expectations, Harness};
use chrono::Utc;
use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaRespErr;

const PARTITIONS: i32 = 3;
const TIERS: u32 = 3;
const PATIENCE: Duration = Duration::from_secs(90);

enum Command {
    /// Creates a topic and everything busway derives from it for `group`.
    CreateFor { topic: String, group: String },
    /// Sets (or, with NO_ERROR, clears) a topic's metadata error.
    TopicError {
        topic: String,
        error: RDKafkaRespErr,
    },
}

/// A mock cluster on a thread of its own (its handle cannot leave the thread that made it),
/// driven by commands.
struct Mock {
    bootstrap: String,
    commands: Mutex<sync_mpsc::Sender<(Command, sync_mpsc::Sender<()>)>>,
}

impl Mock {
    fn start() -> Arc<Self> {
        let (tx, rx) = sync_mpsc::channel::<(Command, sync_mpsc::Sender<()>)>();
        let (boot_tx, boot_rx) = sync_mpsc::channel();
        std::thread::spawn(move || {
            let mock = MockCluster::new(1).expect("mock cluster");
            boot_tx.send(mock.bootstrap_servers()).unwrap();
            while let Ok((command, done)) = rx.recv() {
                match command {
                    Command::CreateFor { topic, group } => {
                        let mut topics = vec![
                            topic.clone(),
                            format!("{topic}.scheduled"),
                            format!("{topic}.{group}.dlq"),
                        ];
                        topics.extend((1..=TIERS).map(|n| format!("{topic}.{group}.retry.{n}")));
                        for t in &topics {
                            mock.create_topic(t, PARTITIONS, 1).expect("create topic");
                        }
                    }
                    Command::TopicError { topic, error } => {
                        mock.topic_error(&topic, error).expect("topic error");
                    }
                }
                let _ = done.send(());
            }
            // Clients of the test may still be leaving their groups: let them.
            std::thread::sleep(Duration::from_secs(5));
            drop(mock);
        });
        Arc::new(Self {
            bootstrap: boot_rx.recv().expect("mock bootstrap"),
            commands: Mutex::new(tx),
        })
    }

    fn run(&self, command: Command) {
        let (done_tx, done_rx) = sync_mpsc::channel();
        self.commands
            .lock()
            .unwrap()
            .send((command, done_tx))
            .expect("mock thread");
        done_rx.recv().expect("mock command done");
    }

    fn create_for(&self, topic: &str, group: &str) {
        self.run(Command::CreateFor {
            topic: topic.to_owned(),
            group: group.to_owned(),
        });
    }

    fn refuse(&self, topic: &str, refuse: bool) {
        let error = if refuse {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
        } else {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
        };
        self.run(Command::TopicError {
            topic: topic.to_owned(),
            error,
        });
    }
}

fn config(mock: &Mock) -> KafkaConfig {
    KafkaConfig {
        // The mock cluster has no CreateTopics API: topics are made by the test.
        create_topics: false,
        partitions: PARTITIONS,
        retry_tiers: TIERS,
        ..common::config(&mock.bootstrap)
    }
}

async fn harness() -> Harness {
    common::init_logs();
    let mock = Mock::start();
    let broker = KafkaBroker::connect(config(&mock))
        .await
        .expect("connect to the mock cluster");
    let faults = mock.clone();
    Harness::new(broker)
        .expectations(Expectations {
            patience: PATIENCE,
            quiet_period: Duration::from_secs(1),
            ..Expectations::default()
        })
        // The scenario names its topic and group here first: the topics are created with them.
        .refuse_dead_letters(Arc::new(move |topic, group, refuse| {
            let faults = faults.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    if refuse {
                        faults.create_for(&topic, &group);
                    }
                    faults.refuse(&format!("{topic}.{group}.dlq"), refuse);
                })
                .await
                .expect("mock command");
            })
        }))
}

busway_testkit::conformance_suite! {
    harness: harness,
    // Every other scenario runs on tansu, in tests/conformance.rs.
    only: [failed_settlement_neither_loses_nor_freezes],
}

/// The dead letter is refused and so is the redelivery the runtime falls back to: it gives the
/// delivery up. The record is neither lost nor does it stop its partition: the records behind
/// it are handled, it comes back (attempt counted) until the broker takes its dead letter, and
/// then the group commits past everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_copy_and_a_refused_fallback_lose_nothing_and_freeze_nothing() {
    common::init_logs();
    let mock = Mock::start();
    let broker = KafkaBroker::connect(config(&mock)).await.unwrap();
    let (topic, group) = (unique("refused"), "g");
    let mock_ = mock.clone();
    let (t, g) = (topic.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        mock_.create_for(&t, &g);
        mock_.refuse(&format!("{t}.{g}.dlq"), true);
        for n in 1..=TIERS {
            mock_.refuse(&format!("{t}.{g}.retry.{n}"), true);
        }
    })
    .await
    .unwrap();

    let poison = numbered(0).to_builder().partition_key("k").build().unwrap();
    let healthy: Arc<Mutex<Vec<usize>>> = Arc::default();
    let poison_calls: Arc<Mutex<Vec<u32>>> = Arc::default();
    let consumer = Consumer::builder(Arc::new(broker.clone()), &topic, group)
        .start_position(StartPosition::Earliest)
        .concurrency(4)
        .retry(RetryPolicy::none())
        .redelivery(RedeliveryPolicy::new(
            2,
            Backoff::Fixed {
                delay: Duration::from_millis(100),
            },
        ))
        .start({
            let (healthy, calls, poison_id) = (
                healthy.clone(),
                poison_calls.clone(),
                poison.id().to_owned(),
            );
            handler_fn(move |inc: busway_core::Incoming| {
                let (healthy, calls, poison_id) =
                    (healthy.clone(), calls.clone(), poison_id.clone());
                async move {
                    if inc.message.id() == poison_id {
                        calls.lock().unwrap().push(inc.info.attempt);
                        return Err(HandlerError::permanent("order does not exist"));
                    }
                    healthy.lock().unwrap().push(number_of(&inc.message));
                    Ok(())
                }
            })
        })
        .await
        .unwrap();
    broker.publish(&topic, poison.clone()).await.unwrap();
    // Behind it in its partition (same key), and elsewhere.
    for i in 1..=10 {
        let key = if i % 2 == 0 {
            "k".to_owned()
        } else {
            format!("k{i}")
        };
        let m = numbered(i).to_builder().partition_key(key).build().unwrap();
        broker.publish(&topic, m).await.unwrap();
    }
    eventually(PATIENCE, "the poison given back twice", || {
        poison_calls.lock().unwrap().len() >= 3
    })
    .await;
    eventually(PATIENCE, "the healthy messages", || {
        healthy.lock().unwrap().len() == 10
    })
    .await;
    assert_eq!(consumer.stats().dead_lettered, 0);
    let attempts = poison_calls.lock().unwrap().clone();
    assert!(
        attempts.windows(2).all(|w| w[1] > w[0]),
        "every time it came back its attempt was counted: {attempts:?}"
    );
    let group_id = broker.config().kafka_group_id(&topic, group);
    assert!(
        !common::committed_everything(&mock.bootstrap, &group_id, &topic),
        "committed past the record still in flight"
    );

    let mock_ = mock.clone();
    let (t, g) = (topic.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        mock_.refuse(&format!("{t}.{g}.dlq"), false);
        for n in 1..=TIERS {
            mock_.refuse(&format!("{t}.{g}.retry.{n}"), false);
        }
    })
    .await
    .unwrap();
    eventually(PATIENCE, "the dead letter once the broker takes it", || {
        consumer.stats().dead_lettered == 1
    })
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !common::committed_everything(&mock.bootstrap, &group_id, &topic) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "commits froze: {:?}",
            common::commits(&mock.bootstrap, &group_id, &topic)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(report.stats.dead_lettered, 1);
    let mut handled = healthy.lock().unwrap().clone();
    handled.sort_unstable();
    assert_eq!(
        handled,
        (1..=10).collect::<Vec<_>>(),
        "healthy messages lost or repeated"
    );
    let dead = broker.peek(&topic, group, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message, poison);
    drop(broker);
}

/// Through the subscription: a settlement the broker refuses fails, the delivery (dropped with
/// its failure) comes back with its attempt counted, and settles once the broker takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_settlement_keeps_the_record_for_another_delivery() {
    common::init_logs();
    let mock = Mock::start();
    let broker = KafkaBroker::connect(config(&mock)).await.unwrap();
    let (topic, group) = (unique("keeps"), "g");
    let dlq = format!("{topic}.{group}.dlq");
    {
        let (mock, topic, dlq) = (mock.clone(), topic.clone(), dlq.clone());
        tokio::task::spawn_blocking(move || {
            mock.create_for(&topic, group);
            mock.refuse(&dlq, true);
        })
        .await
        .unwrap();
    }
    let mut sub = broker
        .subscribe(
            &topic,
            group,
            SubscribeOptions::default().start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let m = numbered(1);
    broker.publish(&topic, m.clone()).await.unwrap();
    let dead_letter = |attempts| {
        Settlement::DeadLetter(Box::new(DeadLetterMetadata {
            reason: DeadLetterReason::PermanentError,
            error: "refused".into(),
            original_topic: topic.clone(),
            group: group.into(),
            attempts,
            first_failure: Utc::now(),
            last_failure: Utc::now(),
        }))
    };
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(d.attempt(), 1);
    let err = d.settle(dead_letter(1)).await.expect_err("the DLQ refuses");
    println!("refused: {err}");
    let again = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(again.message(), &m, "the refused delivery came back");
    assert_eq!(again.attempt(), 2);
    {
        let (mock, dlq) = (mock.clone(), dlq.clone());
        tokio::task::spawn_blocking(move || mock.refuse(&dlq, false))
            .await
            .unwrap();
    }
    // The producer learns of the change with its next metadata refresh: until then the
    // settlement fails, and the delivery comes back again.
    let mut delivery = again;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let attempt = delivery.attempt();
        match delivery.settle(dead_letter(attempt)).await {
            Ok(()) => break,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "still refused: {e}");
                delivery = next_delivery(&mut sub, PATIENCE).await;
                assert_eq!(delivery.message(), &m);
                assert_eq!(delivery.attempt(), attempt + 1);
            }
        }
    }
    let group_id = broker.config().kafka_group_id(&topic, group);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !common::committed_everything(&mock.bootstrap, &group_id, &topic) {
        assert!(tokio::time::Instant::now() < deadline, "commits froze");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sub.close().await.unwrap();
    let dead = broker.peek(&topic, group, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message, m);
}
