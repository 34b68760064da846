//! Core benchmarks: CloudEvents encode/decode, and an in-process round trip through the consumer
//! runtime with the full middleware stack against a bare subscription loop.
//!
//! ```sh
//! cargo bench --bench core
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use busway::memory::MemoryBroker;
use busway::wire;
use busway::{
    CircuitBreakerConfig, Consumer, HandlerError, MemoryIdempotencyStore, Message, Publisher,
    RetryPolicy, SubscribeOptions, Subscriber, handler_fn,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn sample(data_len: usize) -> Message {
    Message::builder("/bench/orders", "bench.order.placed.v1")
        .subject("orders/1")
        .partition_key("customer-1")
        .extension(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .datacontenttype("application/octet-stream")
        .data(vec![7u8; data_len])
        .build()
        .expect("valid message")
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for size in [256usize, 16 * 1024] {
        let m = sample(size);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("binary_encode", size), &m, |b, m| {
            b.iter(|| wire::binary_attributes(std::hint::black_box(m)))
        });
        let headers: Vec<(String, String)> = wire::binary_attributes(&m)
            .into_iter()
            .map(|(k, v)| (format!("ce_{k}"), v))
            .collect();
        group.bench_with_input(BenchmarkId::new("binary_decode", size), &headers, |b, h| {
            b.iter(|| {
                wire::from_binary(
                    h.iter().map(|(k, v)| (k.as_str(), v.clone())),
                    &["ce_"],
                    Some("application/octet-stream".to_owned()),
                    m.data().clone(),
                )
                .expect("decodes")
            })
        });
        let structured = wire::to_structured(&m).expect("encodes");
        group.bench_with_input(BenchmarkId::new("structured_encode", size), &m, |b, m| {
            b.iter(|| wire::to_structured(std::hint::black_box(m)).expect("encodes"))
        });
        group.bench_with_input(
            BenchmarkId::new("structured_decode", size),
            &structured,
            |b, s| b.iter(|| wire::from_structured(std::hint::black_box(s)).expect("decodes")),
        );
    }
    group.finish();
}

const BATCH: usize = 2_000;

/// Publishes BATCH messages and waits until a bare subscription loop acked them all.
async fn bare_round_trip(n: usize) -> Duration {
    let broker = MemoryBroker::new();
    let mut sub = broker
        .subscribe("bench", "g", SubscribeOptions::default())
        .await
        .expect("subscribe");
    let started = Instant::now();
    let consume = tokio::spawn(async move {
        for _ in 0..n {
            let d = sub.next().await.expect("open").expect("delivery");
            d.ack().await.expect("ack");
        }
    });
    for _ in 0..n {
        broker.publish("bench", sample(256)).await.expect("publish");
    }
    consume.await.expect("consumer");
    started.elapsed()
}

/// The same through the consumer runtime: observe, breaker, dedup, retry, timeout.
async fn runtime_round_trip(n: usize, full_stack: bool) -> Duration {
    let broker = MemoryBroker::new();
    let mut builder = Consumer::builder(Arc::new(broker.clone()), "bench", "g")
        .concurrency(16)
        .retry(RetryPolicy::none());
    if full_stack {
        builder = builder
            .retry(RetryPolicy::fixed(Duration::from_millis(1), 3))
            .timeout(Duration::from_secs(5))
            .dedup(Arc::new(MemoryIdempotencyStore::default()))
            .circuit_breaker(CircuitBreakerConfig::default());
    }
    let consumer = builder
        .start(handler_fn(|_m: Message| async {
            Ok::<_, HandlerError>(())
        }))
        .await
        .expect("start");
    let started = Instant::now();
    for _ in 0..n {
        broker.publish("bench", sample(256)).await.expect("publish");
    }
    while consumer.stats().acked < n as u64 {
        tokio::task::yield_now().await;
    }
    let elapsed = started.elapsed();
    consumer.shutdown().await.expect("shutdown");
    elapsed
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("in_process_round_trip");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.bench_function("bare_subscription", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += bare_round_trip(BATCH).await;
            }
            total
        })
    });
    for (name, full) in [
        ("runtime_minimal", false),
        ("runtime_full_middleware", true),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += runtime_round_trip(BATCH, full).await;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codec, round_trip);
criterion_main!(benches);
