//! Throughput of busway-rabbitmq against raw lapin, in the same run, on the same broker.
//!
//! ```text
//! BUSWAY_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!   cargo bench -p busway-rabbitmq --bench throughput
//! ```
//!
//! Three contenders, each with its own connection(s) and its own exchange and queue:
//!
//! - **raw lapin, native properties only**: what a careful lapin user publishes (persistent,
//!   message id, type, content type, timestamp);
//! - **raw lapin, same content as busway**: the same native properties plus, written by hand,
//!   the `cloudEvents_*` headers busway writes, so the bytes on the wire are the same and the
//!   difference is busway's own overhead;
//! - **busway-rabbitmq**: `publish_batch` and a `Subscription`, which also encode and decode
//!   full CloudEvents.
//!
//! Two workloads:
//!
//! - **publish with confirms**: persistent, mandatory messages, published in windows of
//!   `BENCH_WINDOW` (a whole window in flight, then its confirms awaited);
//! - **consume with acks**: the queue filled by the publish workload is drained with a prefetch
//!   of `BENCH_PREFETCH`, each delivery acked before the next is taken.
//!
//! The machine is shared and its load drifts, so the contenders take turns at a fine grain:
//! window by window (publishing) and chunk of `BENCH_WINDOW` deliveries by chunk (consuming),
//! with the order rotating. Each contender's throughput is its messages over the sum of its own
//! windows' times; every round uses fresh queues; medians over the rounds are reported.
//!
//! Settings: `BENCH_MESSAGES` per contender and round (default 20000), `BENCH_PAYLOAD` bytes
//! (256), `BENCH_ROUNDS` (5), `BENCH_WINDOW` (1000), `BENCH_PREFETCH` (256).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use busway_core::{Message, Publisher, SubscribeOptions, Subscriber, Subscription};
use busway_rabbitmq::{RabbitMqBroker, RabbitMqConfig};
use futures::StreamExt;
use futures::future::join_all;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

struct Settings {
    messages: usize,
    payload: usize,
    rounds: usize,
    window: usize,
    prefetch: u16,
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and
    // a benchmark has no place in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput: benchmark skipped (run it with `cargo bench`)");
        return;
    }
    let settings = Settings {
        messages: setting("BENCH_MESSAGES", 20_000),
        payload: setting("BENCH_PAYLOAD", 256),
        rounds: setting("BENCH_ROUNDS", 5),
        window: setting("BENCH_WINDOW", 1000).max(1),
        prefetch: u16::try_from(setting("BENCH_PREFETCH", 256)).unwrap_or(u16::MAX),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(settings));
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    RawMinimal,
    RawSameContent,
    Busway,
}

impl Contender {
    const ALL: [Self; 3] = [Self::RawMinimal, Self::RawSameContent, Self::Busway];

    fn name(self) -> &'static str {
        match self {
            Self::RawMinimal => "raw lapin, native properties only",
            Self::RawSameContent => "raw lapin, same content as busway",
            Self::Busway => "busway-rabbitmq",
        }
    }
}

/// A contender's publishing side.
enum Sender<'a> {
    Raw { ch: &'a Channel, cloudevents: bool },
    Busway(&'a RabbitMqBroker),
}

/// A contender's consuming side (three of them, for the whole run: size does not matter).
#[allow(clippy::large_enum_variant)]
enum Receiver {
    Raw(lapin::Consumer, Channel),
    Busway(Box<dyn Subscription>),
}

async fn run(s: Settings) {
    let url = busway_testkit::fixtures::rabbitmq_url().await;
    let raw_a = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("raw lapin connection");
    let raw_b = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("raw lapin connection");
    let broker =
        RabbitMqBroker::connect(RabbitMqConfig::new(url.clone()).connection_name("busway-bench"))
            .await
            .expect("busway connection");
    println!(
        "busway-rabbitmq vs raw lapin: {} messages of {} bytes per contender and round, \
         window {}, prefetch {}, {} rounds",
        s.messages, s.payload, s.window, s.prefetch, s.rounds
    );
    let admin = raw_a.create_channel().await.unwrap();
    let (ch_a, ch_b) = (
        raw_a.create_channel().await.unwrap(),
        raw_b.create_channel().await.unwrap(),
    );
    for ch in [&ch_a, &ch_b] {
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
    }
    let senders = [
        Sender::Raw {
            ch: &ch_a,
            cloudevents: false,
        },
        Sender::Raw {
            ch: &ch_b,
            cloudevents: true,
        },
        Sender::Busway(&broker),
    ];
    // results[workload][contender][round]
    let mut publish = vec![Vec::new(); 3];
    let mut consume = vec![Vec::new(); 3];
    // Client CPU µs per message, same layout.
    let mut publish_cpu = vec![Vec::new(); 3];
    let mut consume_cpu = vec![Vec::new(); 3];
    for round in 0..s.rounds {
        let topics: Vec<String> = Contender::ALL
            .iter()
            .map(|who| format!("bench-{}-{round}-{}", std::process::id(), *who as usize))
            .collect();
        for (who, topic) in Contender::ALL.iter().zip(&topics) {
            if *who == Contender::Busway {
                // Creating the group declares busway's topology; dropping it stops consuming.
                drop(
                    broker
                        .subscribe(topic, "g", SubscribeOptions::default())
                        .await
                        .unwrap(),
                );
            } else {
                declare(&admin, topic, &format!("{topic}.g")).await;
            }
        }

        let mut spent = [Duration::ZERO; 3];
        let mut cpu = [Duration::ZERO; 3];
        for (turn, start) in (0..s.messages).step_by(s.window).enumerate() {
            let end = (start + s.window).min(s.messages);
            for i in rotated(turn) {
                let before = cpu_time();
                spent[i] += publish_window(&senders[i], &topics[i], start..end, &s).await;
                cpu[i] += cpu_time().saturating_sub(before);
            }
        }
        for i in 0..3 {
            publish[i].push(rate(s.messages, spent[i]));
            publish_cpu[i].push(per_message(cpu[i], s.messages));
        }

        let mut receivers = vec![
            raw_receiver(&raw_a, &format!("{}.g", topics[0]), &s).await,
            raw_receiver(&raw_b, &format!("{}.g", topics[1]), &s).await,
            Receiver::Busway(
                broker
                    .subscribe(
                        &topics[2],
                        "g",
                        SubscribeOptions::default().prefetch(usize::from(s.prefetch)),
                    )
                    .await
                    .unwrap(),
            ),
        ];
        let mut spent = [Duration::ZERO; 3];
        let mut cpu = [Duration::ZERO; 3];
        for (turn, start) in (0..s.messages).step_by(s.window).enumerate() {
            let n = (start + s.window).min(s.messages) - start;
            for i in rotated(turn) {
                let before = cpu_time();
                spent[i] += consume_chunk(&mut receivers[i], n).await;
                cpu[i] += cpu_time().saturating_sub(before);
            }
        }
        for i in 0..3 {
            consume[i].push(rate(s.messages, spent[i]));
            consume_cpu[i].push(per_message(cpu[i], s.messages));
        }
        for receiver in receivers {
            match receiver {
                Receiver::Raw(_, ch) => drop(ch.close(200, "OK".into()).await),
                Receiver::Busway(mut sub) => sub.close().await.unwrap(),
            }
        }
        println!(
            "round {round}: publish {:.0} / {:.0} / {:.0} msg/s, consume {:.0} / {:.0} / {:.0} msg/s \
             (raw minimal / raw same content / busway)",
            publish[0][round],
            publish[1][round],
            publish[2][round],
            consume[0][round],
            consume[1][round],
            consume[2][round],
        );
        for topic in &topics {
            for queue in [format!("{topic}.g"), format!("{topic}.g.dlq")] {
                let _ = admin
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for exchange in [topic.clone(), format!("{topic}.dlx")] {
                let _ = admin
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
    }
    let busway = Contender::Busway as usize;
    println!();
    println!(
        "| workload | contender | msg/s (median) | busway / contender | client CPU µs/msg (median) |"
    );
    println!("|---|---|---:|---:|---:|");
    for (workload, results, cpu) in [
        ("publish with confirms", &publish, &publish_cpu),
        ("consume with acks", &consume, &consume_cpu),
    ] {
        for who in Contender::ALL {
            let i = who as usize;
            let ratio = if who == Contender::Busway {
                String::new()
            } else {
                format!(
                    "{:.2}x",
                    median(results[busway].clone()) / median(results[i].clone())
                )
            };
            println!(
                "| {workload} | {} | {:.0} | {ratio} | {:.1} |",
                who.name(),
                median(results[i].clone()),
                median(cpu[i].clone())
            );
        }
    }
}

/// The contenders' order in a turn: rotating, so no one is always first after a pause.
fn rotated(turn: usize) -> [usize; 3] {
    let mut order = [0, 1, 2];
    order.rotate_left(turn % 3);
    order
}

async fn declare(ch: &Channel, topic: &str, queue: &str) {
    ch.exchange_declare(
        topic.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.into(),
        topic.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

fn payload(s: &Settings, n: usize) -> Vec<u8> {
    let mut data = vec![b'x'; s.payload];
    let tag = n.to_string();
    let len = tag.len().min(data.len());
    data[..len].copy_from_slice(&tag.as_bytes()[..len]);
    data
}

/// Publishes messages `range` as one window and waits for their confirms.
async fn publish_window(
    sender: &Sender<'_>,
    topic: &str,
    range: std::ops::Range<usize>,
    s: &Settings,
) -> Duration {
    let started = Instant::now();
    match *sender {
        Sender::Busway(broker) => {
            let batch: Vec<Message> = range
                .map(|n| {
                    Message::builder("/bench", "bench.event")
                        .datacontenttype("application/octet-stream")
                        .data(payload(s, n))
                        .build()
                        .unwrap()
                })
                .collect();
            broker.publish_batch(topic, batch).await.unwrap();
        }
        Sender::Raw { ch, cloudevents } => {
            let mut confirms = Vec::with_capacity(range.len());
            for n in range {
                let id = uuid::Uuid::now_v7().to_string();
                let now = chrono::Utc::now();
                let mut props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.as_str().into())
                    .with_type("bench.event".into())
                    .with_content_type("application/octet-stream".into())
                    .with_timestamp(u64::try_from(now.timestamp()).unwrap_or_default());
                if cloudevents {
                    // As busway writes it: every attribute as a `cloudEvents_*` header, besides
                    // the native mirrors above.
                    let mut headers = FieldTable::default();
                    for (name, value) in [
                        ("cloudEvents_specversion", "1.0".to_owned()),
                        ("cloudEvents_id", id.clone()),
                        ("cloudEvents_source", "/bench".to_owned()),
                        ("cloudEvents_type", "bench.event".to_owned()),
                        (
                            "cloudEvents_time",
                            now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                        ),
                    ] {
                        headers.insert(name.into(), AMQPValue::LongString(value.into()));
                    }
                    props = props.with_headers(headers);
                }
                let confirm = ch
                    .basic_publish(
                        topic.into(),
                        "bench.event".into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &payload(s, n),
                        props,
                    )
                    .await
                    .unwrap();
                confirms.push(confirm);
            }
            for confirmation in join_all(confirms).await {
                let confirmation = confirmation.unwrap();
                assert!(confirmation.is_ack() && confirmation.take_message().is_none());
            }
        }
    }
    started.elapsed()
}

async fn raw_receiver(conn: &Connection, queue: &str, s: &Settings) -> Receiver {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(s.prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let consumer = ch
        .basic_consume(
            queue.into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    Receiver::Raw(consumer, ch)
}

/// Takes and acks `n` deliveries, one after the other.
async fn consume_chunk(receiver: &mut Receiver, n: usize) -> Duration {
    let started = Instant::now();
    match receiver {
        Receiver::Raw(consumer, _) => {
            for _ in 0..n {
                let delivery = consumer.next().await.unwrap().unwrap();
                assert!(
                    delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .unwrap()
                );
            }
        }
        Receiver::Busway(sub) => {
            for _ in 0..n {
                let delivery = sub.next().await.unwrap().unwrap();
                assert!(delivery.decode_error().is_none());
                delivery.ack().await.unwrap();
            }
        }
    }
    started.elapsed()
}

/// CPU time this process (every thread: tokio workers, lapin's I/O threads) has used so far,
/// from /proc (10 ms resolution, fine over thousands of messages); zero where there is no /proc.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn rate(messages: usize, elapsed: Duration) -> f64 {
    messages as f64 / elapsed.as_secs_f64()
}

fn per_message(cpu: Duration, messages: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / messages as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
