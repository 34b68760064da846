//! The consumer runtime on the in-process broker, with tokio's paused clock: redelivery timing,
//! dead-lettering, the circuit breaker pausing consumption, and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busway_core::{
    Backoff, CircuitBreaker, CircuitBreakerConfig, CircuitState, Consumer, DeadLetterReason,
    DeadLetters, HandlerError, Incoming, Message, Publisher, RedeliveryPolicy, RetryPolicy,
    handler_fn,
};
use busway_memory::MemoryBroker;
use tokio::time::Instant;

fn message(n: u32) -> Message {
    Message::builder("/test", "t")
        .json(&n)
        .unwrap()
        .build()
        .unwrap()
}

/// Lets spawned tasks run until nothing is runnable (paused clock: time does not move).
async fn settle_tasks() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn broker_redelivery_follows_the_backoff_exactly_then_dead_letters() {
    let broker = MemoryBroker::new();
    let attempts: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let handler = {
        let attempts = attempts.clone();
        handler_fn(move |inc: Incoming| {
            let attempts = attempts.clone();
            async move {
                attempts
                    .lock()
                    .unwrap()
                    .push((inc.info.attempt, Instant::now()));
                Err(HandlerError::transient("still down"))
            }
        })
    };
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .retry(RetryPolicy::fixed(Duration::from_millis(100), 2))
        .redelivery(RedeliveryPolicy::new(
            3,
            Backoff::Exponential {
                initial: Duration::from_secs(1),
                factor: 3.0,
                max_delay: Duration::from_secs(60),
                jitter: false,
            },
        ))
        .start(handler)
        .await
        .unwrap();
    let start = Instant::now();
    broker.publish("orders", message(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = consumer.shutdown().await.unwrap();

    let seen: Vec<(u32, u128)> = attempts
        .lock()
        .unwrap()
        .iter()
        .map(|(a, t)| (*a, (*t - start).as_millis()))
        .collect();
    // Two in-process attempts per delivery, 100 ms apart; redeliveries 1 s then 3 s later.
    assert_eq!(
        seen,
        [(1, 0), (1, 100), (2, 1100), (2, 1200), (3, 4200), (3, 4300)]
    );
    assert_eq!(report.stats.received, 3);
    assert_eq!(report.stats.redelivered, 2);
    assert_eq!(report.stats.dead_lettered, 1);
    let dead = broker.peek("orders", "billing", 10).await.unwrap();
    let meta = dead[0].metadata.as_ref().unwrap();
    assert_eq!(meta.reason, DeadLetterReason::MaxAttemptsExceeded);
    assert_eq!(meta.attempts, 3);
    assert!(meta.error.contains("still down"));
}

#[tokio::test(start_paused = true)]
async fn open_circuit_stops_pulling_until_the_probe() {
    let broker = MemoryBroker::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = {
        let (calls, healthy) = (calls.clone(), healthy.clone());
        handler_fn(move |_m: Message| {
            let (calls, healthy) = (calls.clone(), healthy.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if healthy.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(HandlerError::transient("database down"))
                }
            }
        })
    };
    let breaker = CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 3,
        cool_down: Duration::from_secs(30),
    });
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .concurrency(1)
        .retry(RetryPolicy::none())
        .redelivery(RedeliveryPolicy::new(
            100,
            Backoff::Fixed {
                delay: Duration::from_secs(1),
            },
        ))
        .circuit_breaker_shared(breaker.clone())
        .start(handler)
        .await
        .unwrap();
    for n in 0..10 {
        broker.publish("orders", message(n)).await.unwrap();
    }
    settle_tasks().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "three failures open the circuit"
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    // While open, nothing more is taken from the broker.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(broker.depth("orders", "billing"), 10);

    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(breaker.state(), CircuitState::Closed, "the probe succeeded");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(
        report.stats.acked, 10,
        "everything handled once the circuit closed"
    );
    assert_eq!(broker.depth("orders", "billing"), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_in_flight_handlers_and_settles_them() {
    let broker = MemoryBroker::new();
    let finished = Arc::new(AtomicUsize::new(0));
    let handler = {
        let finished = finished.clone();
        handler_fn(move |_m: Message| {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        })
    };
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .concurrency(3)
        .drain_timeout(Duration::from_secs(10))
        .start(handler)
        .await
        .unwrap();
    for n in 0..5 {
        broker.publish("orders", message(n)).await.unwrap();
    }
    settle_tasks().await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        3,
        "the three in flight finished"
    );
    assert_eq!(report.stats.acked, 3);
    assert_eq!(report.abandoned, 0);
    assert_eq!(
        broker.depth("orders", "billing"),
        2,
        "the two never taken stay queued"
    );
}

#[tokio::test(start_paused = true)]
async fn handlers_past_the_drain_deadline_are_given_back() {
    let broker = MemoryBroker::new();
    let handler = handler_fn(|_m: Message| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, HandlerError>(())
    });
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .concurrency(2)
        .drain_timeout(Duration::from_secs(5))
        .start(handler)
        .await
        .unwrap();
    broker.publish("orders", message(1)).await.unwrap();
    broker.publish("orders", message(2)).await.unwrap();
    settle_tasks().await;
    let started = Instant::now();
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(report.abandoned, 2);
    assert_eq!(report.stats.acked, 0);
    assert_eq!(
        broker.depth("orders", "billing"),
        2,
        "abandoned deliveries return to the queue"
    );
}

#[tokio::test(start_paused = true)]
async fn alert_hook_metric_and_permanent_errors() {
    let broker = MemoryBroker::new();
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .on_dead_letter({
            let alerts = alerts.clone();
            move |a| {
                alerts
                    .lock()
                    .unwrap()
                    .push((a.message_id.clone(), a.metadata.reason.clone()))
            }
        })
        .start(handler_fn(
            |busway_core::Json(n): busway_core::Json<u32>| async move {
                if n == 0 {
                    Err(HandlerError::permanent("zero is not an order"))
                } else {
                    Ok(())
                }
            },
        ))
        .await
        .unwrap();
    let zero = message(0);
    let not_json = Message::builder("/test", "t")
        .data("not json")
        .build()
        .unwrap();
    broker.publish("orders", zero.clone()).await.unwrap();
    broker.publish("orders", not_json.clone()).await.unwrap();
    broker.publish("orders", message(7)).await.unwrap();
    settle_tasks().await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(report.stats.acked, 1);
    assert_eq!(report.stats.dead_lettered, 2);
    let mut alerts = alerts.lock().unwrap().clone();
    alerts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![
        (zero.id().to_owned(), DeadLetterReason::PermanentError),
        (not_json.id().to_owned(), DeadLetterReason::Undecodable),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(alerts, want);
}

#[tokio::test(start_paused = true)]
async fn auto_ack_settles_before_the_handler_runs() {
    let broker = MemoryBroker::new();
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .auto_ack(true)
        .start(handler_fn(|_m: Message| async move {
            Err::<(), _>(HandlerError::transient("lost on purpose"))
        }))
        .await
        .unwrap();
    broker.publish("orders", message(1)).await.unwrap();
    settle_tasks().await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(report.stats.acked, 1);
    assert_eq!(report.stats.redelivered, 0);
    assert_eq!(broker.depth("orders", "billing"), 0);
    assert!(
        broker
            .peek("orders", "billing", 1)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn slow_consumers_slow_publishers_down_instead_of_growing_memory() {
    let broker = MemoryBroker::with_config(busway_memory::MemoryConfig {
        group_capacity: 3,
        publish_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .unwrap();
    let _sub = busway_core::Subscriber::subscribe(&broker, "orders", "g", Default::default())
        .await
        .unwrap();
    for n in 0..3 {
        broker.publish("orders", message(n)).await.unwrap();
    }
    let started = Instant::now();
    let err = broker.publish("orders", message(3)).await.unwrap_err();
    assert_eq!(err.kind(), busway_core::ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(broker.depth("orders", "g"), 3);
}
