//! The middleware layers, proven with tokio's paused clock: exact attempt counts and delays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busway_core::middleware::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, DedupLayer, RetryLayer, TimeoutLayer,
};
use busway_core::{
    Backoff, CircuitState, DeliveryInfo, HandlerError, Incoming, MemoryIdempotencyStore, Message,
    RetryPolicy, handler_fn,
};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

fn incoming(id: &str) -> Incoming {
    Incoming::new(
        Message::builder("/test", "t").id(id).build().unwrap(),
        Arc::new(DeliveryInfo::new("topic", "group", 1)),
    )
}

/// A handler failing with `fail` for the first `failures` calls, recording when it was called.
fn scripted(
    failures: usize,
    fail: fn() -> HandlerError,
) -> (
    impl Service<Incoming, Response = (), Error = HandlerError, Future = impl Send>
    + Clone
    + Send
    + 'static,
    Arc<Mutex<Vec<Instant>>>,
) {
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let recorded = calls.clone();
    let handler = handler_fn(move |_m: Message| {
        let calls = recorded.clone();
        async move {
            let n = {
                let mut c = calls.lock().unwrap();
                c.push(Instant::now());
                c.len()
            };
            if n <= failures { Err(fail()) } else { Ok(()) }
        }
    });
    (handler, calls)
}

fn offsets(calls: &[Instant]) -> Vec<u128> {
    calls.iter().map(|t| (*t - calls[0]).as_millis()).collect()
}

fn transient() -> HandlerError {
    HandlerError::transient("dependency down")
}

#[tokio::test(start_paused = true)]
async fn exponential_retry_makes_exact_attempts_at_exact_delays() {
    let (handler, calls) = scripted(usize::MAX, transient);
    let policy = RetryPolicy {
        backoff: Backoff::Exponential {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_millis(250),
            jitter: false,
        },
        max_attempts: 5,
        max_elapsed: None,
    };
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(handler);
    let err = svc.oneshot(incoming("a")).await.unwrap_err();
    assert!(err.is_transient());
    assert_eq!(offsets(&calls.lock().unwrap()), [0, 100, 300, 550, 800]);
}

#[tokio::test(start_paused = true)]
async fn retry_stops_at_the_first_success() {
    let (handler, calls) = scripted(2, transient);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::fixed(
            Duration::from_secs(1),
            10,
        )))
        .service(handler);
    svc.oneshot(incoming("a")).await.unwrap();
    assert_eq!(offsets(&calls.lock().unwrap()), [0, 1000, 2000]);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_skip_retries() {
    let (handler, calls) = scripted(usize::MAX, || HandlerError::permanent("bad input"));
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::fixed(
            Duration::from_secs(1),
            10,
        )))
        .service(handler);
    let err = svc.oneshot(incoming("a")).await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_caps_retrying() {
    let (handler, calls) = scripted(usize::MAX, transient);
    let policy =
        RetryPolicy::fixed(Duration::from_secs(1), 100).max_elapsed(Duration::from_millis(3500));
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(handler);
    let started = Instant::now();
    svc.oneshot(incoming("a")).await.unwrap_err();
    assert_eq!(offsets(&calls.lock().unwrap()), [0, 1000, 2000, 3000]);
    assert!(started.elapsed() <= Duration::from_millis(3500));
}

#[tokio::test(start_paused = true)]
async fn no_retry_policy_makes_one_attempt() {
    let (handler, calls) = scripted(usize::MAX, transient);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::none()))
        .service(handler);
    svc.oneshot(incoming("a")).await.unwrap_err();
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_transient_and_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let slow = handler_fn(move |_m: Message| {
        let calls = counted.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    });
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::fixed(
            Duration::from_millis(10),
            2,
        )))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(slow);
    let started = Instant::now();
    let err = svc.oneshot(incoming("a")).await.unwrap_err();
    assert!(err.is_transient());
    assert!(
        err.to_string().contains("did not finish within 1s"),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(started.elapsed(), Duration::from_millis(2010));
}

#[tokio::test]
async fn dedup_runs_a_message_once_and_retries_after_a_failure() {
    let (handler, calls) = scripted(1, transient);
    let store = Arc::new(MemoryIdempotencyStore::default());
    let mut svc = ServiceBuilder::new()
        .layer(DedupLayer::new(store))
        .service(handler);
    // First attempt fails: the claim is released, so the redelivery runs the handler again.
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(incoming("m1"))
            .await
            .is_err()
    );
    svc.ready()
        .await
        .unwrap()
        .call(incoming("m1"))
        .await
        .unwrap();
    // Now processed: repeats are acknowledged without running the handler.
    svc.ready()
        .await
        .unwrap()
        .call(incoming("m1"))
        .await
        .unwrap();
    svc.ready()
        .await
        .unwrap()
        .call(incoming("m1"))
        .await
        .unwrap();
    assert_eq!(calls.lock().unwrap().len(), 2);
    svc.ready()
        .await
        .unwrap()
        .call(incoming("m2"))
        .await
        .unwrap();
    assert_eq!(calls.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn dedup_keys_on_source_and_id() {
    let (handler, calls) = scripted(0, transient);
    let mut svc = ServiceBuilder::new()
        .layer(DedupLayer::new(Arc::new(MemoryIdempotencyStore::default())))
        .service(handler);
    let a = incoming("same-id");
    let mut b = incoming("same-id");
    b.message = Message::builder("/other-source", "t")
        .id("same-id")
        .build()
        .unwrap();
    svc.ready().await.unwrap().call(a).await.unwrap();
    svc.ready().await.unwrap().call(b).await.unwrap();
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "same id from two sources are two events"
    );
}

#[tokio::test(start_paused = true)]
async fn circuit_breaker_service_is_not_ready_while_open() {
    let (handler, _calls) = scripted(usize::MAX, transient);
    let breaker = CircuitBreaker::new(CircuitBreakerConfig {
        failure_threshold: 2,
        cool_down: Duration::from_secs(30),
    });
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(handler);
    for _ in 0..2 {
        svc.ready()
            .await
            .unwrap()
            .call(incoming("x"))
            .await
            .unwrap_err();
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let opened = Instant::now();
    // ready() resolves only when the cool-down is over, as the probe.
    svc.ready().await.unwrap();
    assert_eq!(opened.elapsed(), Duration::from_secs(30));
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    svc.call(incoming("probe")).await.unwrap_err();
    assert_eq!(breaker.state(), CircuitState::Open);
}
