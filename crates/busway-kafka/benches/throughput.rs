//! Throughput of busway-kafka against raw rdkafka, in the same run, on the same broker.
//!
//! ```text
//! BUSWAY_KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo bench -p busway-kafka --bench throughput
//! ```
//!
//! Raw and busway alternate which goes first from round to round.
//!
//! - produce: N records of the same size and headers (busway: `publish_batch` of CloudEvents;
//!   raw: a `FutureProducer` with the same idempotent, acks=all settings sending pre-encoded
//!   records), every delivery report awaited.
//! - consume with commits: N records from a pre-filled topic (busway: the `Consumer` runtime with
//!   a no-op handler, offsets committed by the adapter; raw: a `StreamConsumer` storing each
//!   offset and committing asynchronously every 500 ms), timed until the N-th record is handled.
//!
//! `BUSWAY_BENCH_MESSAGES` (default 50000), `BUSWAY_BENCH_BYTES` (default 256) and
//! `BUSWAY_BENCH_ROUNDS` (default 5) tune it. Each round runs raw and busway back to back on
//! fresh topics; the summary gives throughput over all rounds and the median per-round ratio
//! (the machine's load varies between rounds more than between the two clients).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use busway_core::{Consumer, HandlerError, Message, Publisher, StartPosition, handler_fn};
use busway_kafka::{KafkaBroker, KafkaConfig};
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

const BATCH: usize = 1000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unique(what: &str) -> String {
    format!("bench-{what}-{}", uuid::Uuid::new_v4().simple())
}

fn message(i: usize, bytes: usize) -> Message {
    Message::builder("/bench", "bench.event")
        .partition_key(format!("k{}", i % 64))
        .datacontenttype("application/octet-stream")
        .data(vec![b'x'; bytes])
        .build()
        .unwrap()
}

/// The same record busway writes, encoded once up front, for the raw client.
fn raw_headers(m: &Message) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    for (k, v) in busway_core::wire::binary_attributes(m) {
        h = h.insert(Header {
            key: &format!("ce_{k}"),
            value: Some(&v),
        });
    }
    h.insert(Header {
        key: "content-type",
        value: Some("application/octet-stream"),
    })
}

fn raw_client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

async fn busway_produce(broker: &KafkaBroker, topic: &str, n: usize, bytes: usize) -> Duration {
    // Built before the clock starts, like the raw client's records.
    let messages: Vec<Message> = (0..n).map(|i| message(i, bytes)).collect();
    let batches: Vec<Vec<Message>> = messages.chunks(BATCH).map(<[Message]>::to_vec).collect();
    let started = Instant::now();
    for batch in batches {
        broker
            .publish_batch(topic, batch)
            .await
            .expect("busway publish");
    }
    started.elapsed()
}

async fn raw_produce(bootstrap: &str, topic: &str, n: usize, bytes: usize) -> Duration {
    let producer: FutureProducer = raw_client(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let records: Vec<(String, Vec<u8>, OwnedHeaders)> = (0..n)
        .map(|i| {
            let m = message(i, bytes);
            (format!("k{}", i % 64), m.data().to_vec(), raw_headers(&m))
        })
        .collect();
    // Connected and holding its producer id before the clock starts, like busway's.
    producer
        .send(
            FutureRecord::<str, str>::to(topic).payload("warm-up"),
            Timeout::Never,
        )
        .await
        .map_err(|(e, _)| e)
        .expect("warm-up");
    let started = Instant::now();
    for chunk in records.chunks(BATCH) {
        let sends = chunk.iter().map(|(k, v, h)| {
            producer.send(
                FutureRecord::to(topic).key(k).payload(v).headers(h.clone()),
                Timeout::Never,
            )
        });
        for r in join_all(sends).await {
            r.map_err(|(e, _)| e).expect("raw publish");
        }
    }
    started.elapsed()
}

async fn busway_consume(broker: &KafkaBroker, topic: &str, n: usize) -> Duration {
    let handled = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let consumer = Consumer::builder(Arc::new(broker.clone()), topic, unique("g"))
        .start_position(StartPosition::Earliest)
        .concurrency(env_usize("BUSWAY_BENCH_CONCURRENCY", 64))
        .start(handler_fn({
            let (handled, done) = (handled.clone(), done.clone());
            move |_m: Message| {
                let (handled, done) = (handled.clone(), done.clone());
                async move {
                    if handled.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        done.notify_one();
                    }
                    Ok::<_, HandlerError>(())
                }
            }
        }))
        .await
        .expect("start consumer");
    done.notified().await;
    let elapsed = started.elapsed();
    consumer.shutdown().await.expect("shutdown");
    elapsed
}

async fn raw_consume(bootstrap: &str, topic: &str, n: usize) -> Duration {
    let started = Instant::now();
    let consumer: StreamConsumer = raw_client(bootstrap)
        .set("group.id", unique("raw"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut last_commit = Instant::now();
    for _ in 0..n {
        let m = consumer.recv().await.expect("raw consume");
        consumer.store_offset_from_message(&m).unwrap();
        if last_commit.elapsed() > Duration::from_millis(500) {
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    started.elapsed()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let Ok(bootstrap) = std::env::var("BUSWAY_KAFKA_BOOTSTRAP") else {
        eprintln!(
            "set BUSWAY_KAFKA_BOOTSTRAP (scripts/test services prints it) to run this benchmark"
        );
        return;
    };
    let n = env_usize("BUSWAY_BENCH_MESSAGES", 50_000);
    let bytes = env_usize("BUSWAY_BENCH_BYTES", 256);
    let rounds = env_usize("BUSWAY_BENCH_ROUNDS", 5);
    let broker = KafkaBroker::connect(KafkaConfig {
        bootstrap_servers: bootstrap.clone(),
        partitions: 4,
        retry_tiers: env_usize("BUSWAY_BENCH_TIERS", 3) as u32,
        ..KafkaConfig::default()
    })
    .await
    .expect("connect");
    println!("{n} messages of {bytes} bytes, {rounds} rounds, broker {bootstrap}");
    let (mut produce_ratios, mut consume_ratios) = (Vec::new(), Vec::new());
    let mut totals = [Duration::ZERO; 4];
    for round in 1..=rounds {
        // Raw and busway alternate inside a round, each on its own new topic.
        let (t_busway, t_raw) = (unique("busway"), unique("raw"));
        // Both topics are created the same way (and busway's producer warmed up), so only the
        // clients differ.
        broker
            .publish(&t_raw, message(0, 1))
            .await
            .expect("create raw topic");
        broker
            .publish(&t_busway, message(0, 1))
            .await
            .expect("create busway topic");
        // Who goes first alternates, so that neither always meets a broker still busy with
        // the other's work.
        let times = if round % 2 == 1 {
            let rp = raw_produce(&bootstrap, &t_raw, n, bytes).await;
            let bp = busway_produce(&broker, &t_busway, n, bytes).await;
            let rc = raw_consume(&bootstrap, &t_raw, n).await;
            let bc = busway_consume(&broker, &t_busway, n).await;
            [rp, bp, rc, bc]
        } else {
            let bp = busway_produce(&broker, &t_busway, n, bytes).await;
            let rp = raw_produce(&bootstrap, &t_raw, n, bytes).await;
            let bc = busway_consume(&broker, &t_busway, n).await;
            let rc = raw_consume(&bootstrap, &t_raw, n).await;
            [rp, bp, rc, bc]
        };
        for (total, t) in totals.iter_mut().zip(times) {
            *total += t;
        }
        let [rp, bp, rc, bc] = times.map(|t| rate(n, t));
        println!(
            "round {round}: produce busway {bp:>9.0}/s raw {rp:>9.0}/s ({:.2}x) | consume+commit busway {bc:>9.0}/s raw {rc:>9.0}/s ({:.2}x)",
            bp / rp,
            bc / rc
        );
        produce_ratios.push(bp / rp);
        consume_ratios.push(bc / rc);
    }
    let total = n * rounds;
    let [rp, bp, rc, bc] = totals.map(|t| rate(total, t));
    println!(
        "all rounds: produce busway {bp:.0}/s raw {rp:.0}/s ratio {:.2}x (median of rounds {:.2}x) | consume+commit busway {bc:.0}/s raw {rc:.0}/s ratio {:.2}x (median of rounds {:.2}x)",
        bp / rp,
        median(&mut produce_ratios),
        bc / rc,
        median(&mut consume_ratios),
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
