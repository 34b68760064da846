//! A real broker restart (`rabbitmqctl stop_app` / `start_app`), not just cut connections:
//! durable topology and persistent messages survive it, and busway reconnects, re-declares,
//! resumes consuming and publishes again, losing no confirmed message, on classic and quorum
//! queues.
//!
//! It restarts a private RabbitMQ node, never the shared one the other tests use:
//! `BUSWAY_RABBITMQ_PRIVATE_URL` is that node's URL and `BUSWAY_RABBITMQ_RESTART` a shell
//! command that restarts it. `scripts/test` provisions the node (busway-restart@localhost on
//! 127.0.0.1:5682, its own data directory; see scripts/brokers/rabbitmq.sh) and exports both.
//! Without them the test says why and passes without running: a developer's machine may have
//! no node to spare.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use busway_core::{
    Consumer, ConsumerHandle, MemoryIdempotencyStore, Message, Publisher, SubscribeOptions,
    Subscriber,
};
use busway_rabbitmq::{QueueType, RabbitMqBroker, RabbitMqConfig, ReconnectConfig};
use busway_testkit::conformance::support::{Recorder, next_delivery, number_of, numbered};
use tokio::task::JoinHandle;

/// Messages per queue type; enough to be mid-stream when the broker goes down.
const TOTAL: usize = 300;

/// The private node's URL and restart command, or why the test cannot run.
fn private_node() -> Result<(String, String), &'static str> {
    let url = std::env::var("BUSWAY_RABBITMQ_PRIVATE_URL")
        .map_err(|_| "BUSWAY_RABBITMQ_PRIVATE_URL is not set")?;
    let restart = std::env::var("BUSWAY_RABBITMQ_RESTART")
        .map_err(|_| "BUSWAY_RABBITMQ_RESTART is not set")?;
    Ok((url, restart))
}

/// One stream of numbered messages into a topic with two groups: `live`, consumed throughout,
/// and `parked`, which nobody consumes until the end (its messages wait in the queue across
/// the restart).
struct Stream {
    broker: RabbitMqBroker,
    topic: String,
    live: Recorder,
    consumer: ConsumerHandle,
    publishing: JoinHandle<()>,
}

async fn start(url: &str, queue_type: QueueType) -> Stream {
    let config = RabbitMqConfig::new(url)
        .connection_name(common::unique("real-restart"))
        .queue_type(queue_type)
        .publish_timeout(Duration::from_secs(60))
        .reconnect(ReconnectConfig::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ));
    let broker = common::connect(config).await;
    let topic = common::unique("real-restart");
    drop(
        broker
            .subscribe(&topic, "parked", SubscribeOptions::default())
            .await
            .unwrap(),
    );
    let live = Recorder::default();
    let consumer = Consumer::builder(Arc::new(broker.clone()), &topic, "live")
        .concurrency(8)
        .dedup(Arc::new(MemoryIdempotencyStore::default()))
        .start(live.handler())
        .await
        .unwrap();
    let publishing = {
        let broker = broker.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                let m: Message = numbered(i);
                // A publish fails only once its 60 s bound is spent: retry with the same id.
                while let Err(e) = broker.publish(&topic, m.clone()).await {
                    eprintln!("publish {i} failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    Stream {
        broker,
        topic,
        live,
        consumer,
        publishing,
    }
}

/// Every confirmed message reached the live group, and waits, once, in the parked group.
async fn finish(stream: Stream, queue_type: QueueType) {
    let Stream {
        broker,
        topic,
        live,
        consumer,
        publishing,
    } = stream;
    publishing.await.unwrap();
    live.wait_until(
        Duration::from_secs(90),
        &format!("every message after the restart ({queue_type:?})"),
        |seen| seen.iter().map(number_of).collect::<HashSet<_>>().len() >= TOTAL,
    )
    .await;
    consumer.shutdown().await.unwrap();
    let mut parked = broker
        .subscribe(&topic, "parked", SubscribeOptions::default())
        .await
        .unwrap();
    let mut kept = HashSet::new();
    while kept.len() < TOTAL {
        let d = next_delivery(&mut parked, Duration::from_secs(30)).await;
        kept.insert(number_of(d.message()));
        d.ack().await.unwrap();
    }
    assert_eq!(
        kept,
        (0..TOTAL).collect::<HashSet<_>>(),
        "the parked group ({queue_type:?}) lost messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_app_start_app_loses_no_confirmed_message() {
    let (url, restart) = match private_node() {
        Ok(node) => node,
        Err(why) => {
            eprintln!(
                "skipped: {why}; this test restarts a private RabbitMQ node (scripts/test \
                 provisions one), never the shared broker"
            );
            return;
        }
    };
    let classic = start(&url, QueueType::Classic).await;
    let quorum = start(&url, QueueType::Quorum).await;
    // Mid-stream on both.
    classic
        .live
        .wait_for(TOTAL / 4, Duration::from_secs(30))
        .await;
    quorum
        .live
        .wait_for(TOTAL / 4, Duration::from_secs(30))
        .await;
    let out = tokio::process::Command::new("sh")
        .args(["-c", &restart])
        .output()
        .await
        .expect("run BUSWAY_RABBITMQ_RESTART");
    assert!(
        out.status.success(),
        "BUSWAY_RABBITMQ_RESTART ({restart}) failed: {out:?}"
    );
    finish(classic, QueueType::Classic).await;
    finish(quorum, QueueType::Quorum).await;
}
