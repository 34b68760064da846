//! Failure paths of the consumer runtime and the in-process broker that the conformance suite
//! does not reach: panicking handlers, settlements the broker refuses or fails, subscriptions
//! that end by themselves, stack readiness errors, an idempotency store failing after the
//! handler, scheduled messages and redrives under a full group.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use busway_core::{
    Backoff, Claim, Consumer, ConsumerHealth, DeadLetterAlert, DeadLetters, Delivery, Error,
    ErrorKind, HandlerError, IdempotencyStore, Incoming, MemoryIdempotencyStore, Message,
    Publisher, RedeliveryPolicy, Result, RetryPolicy, Scheduler, Settle, Settlement,
    SubscribeOptions, Subscriber, Subscription, handler_fn,
};
use busway_memory::{MemoryBroker, MemoryConfig};

fn message(n: u32) -> Message {
    Message::builder("/test", "t")
        .json(&n)
        .unwrap()
        .build()
        .unwrap()
}

fn number(m: &Message) -> u32 {
    m.decode_json().unwrap()
}

/// Lets spawned tasks run until nothing is runnable (paused clock: time does not move).
async fn settle_tasks() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn redelivery(max: u32) -> RedeliveryPolicy {
    RedeliveryPolicy::new(
        max,
        Backoff::Fixed {
            delay: Duration::from_secs(1),
        },
    )
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_retried_then_dead_lettered_with_the_panic_message() {
    let broker = MemoryBroker::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (calls, handled) = (calls.clone(), handled.clone());
        handler_fn(move |m: Message| {
            let (calls, handled) = (calls.clone(), handled.clone());
            async move {
                if number(&m) == 0 {
                    calls.fetch_add(1, Ordering::SeqCst);
                    panic!("no price for order {}", number(&m));
                }
                handled.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        })
    };
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .retry(RetryPolicy::fixed(Duration::from_millis(10), 2))
        .redelivery(redelivery(3))
        .start(handler)
        .await
        .unwrap();
    broker.publish("orders", message(0)).await.unwrap();
    broker.publish("orders", message(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = consumer.shutdown().await.unwrap();

    assert_eq!(calls.load(Ordering::SeqCst), 6, "2 attempts x 3 deliveries");
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    assert_eq!(
        report.stats.received, 4,
        "3 deliveries of the panicking one, 1 healthy"
    );
    assert_eq!(report.stats.dead_lettered, 1);
    let dead = broker.peek("orders", "billing", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let meta = dead[0].metadata.as_ref().unwrap();
    assert_eq!(meta.reason.as_str(), "handler_panicked");
    assert_eq!(meta.attempts, 3);
    assert!(
        meta.error.contains("no price for order 0"),
        "{}",
        meta.error
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_the_broker_refuses_is_announced_once_it_is_written() {
    let broker = MemoryBroker::with_config(MemoryConfig {
        dead_letter_capacity: 1,
        ..MemoryConfig::default()
    })
    .unwrap();
    let alerts: Arc<Mutex<Vec<DeadLetterAlert>>> = Arc::default();
    let healthy = Arc::new(AtomicUsize::new(0));
    let handler = {
        let healthy = healthy.clone();
        handler_fn(move |m: Message| {
            let healthy = healthy.clone();
            async move {
                if number(&m) < 100 {
                    return Err(HandlerError::permanent("no such order"));
                }
                healthy.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .retry(RetryPolicy::none())
        .redelivery(redelivery(3))
        .on_dead_letter({
            let alerts = alerts.clone();
            move |a| alerts.lock().unwrap().push(a.clone())
        })
        .start(handler)
        .await
        .unwrap();
    broker.publish("orders", message(1)).await.unwrap();
    settle_tasks().await;
    // The dead-letter queue is full now: the second one is refused.
    broker.publish("orders", message(2)).await.unwrap();
    for n in 100..105 {
        broker.publish("orders", message(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        healthy.load(Ordering::SeqCst),
        5,
        "the refused dead letter stopped the consumer"
    );
    assert_eq!(
        alerts.lock().unwrap().len(),
        1,
        "an alert fired for a dead letter that was not written"
    );
    assert_eq!(consumer.stats().dead_lettered, 1);
    assert!(consumer.stats().settle_failures >= 1);
    assert!(
        consumer.stats().received < 40,
        "the refused message came back in a hot loop: {} deliveries",
        consumer.stats().received
    );

    // Room again: the waiting message is dead-lettered and announced, once.
    assert_eq!(broker.purge("orders", "billing").await.unwrap(), 1);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(alerts.lock().unwrap().len(), 2);
    assert_eq!(report.stats.dead_lettered, 2);
    let dead = broker.peek("orders", "billing", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(number(&dead[0].message), 2);
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_message_takes_its_room_when_scheduled_and_is_never_dropped_later() {
    let broker = MemoryBroker::with_config(MemoryConfig {
        group_capacity: 1,
        publish_timeout: Duration::from_secs(1),
        ..MemoryConfig::default()
    })
    .unwrap();
    let at = chrono::Utc::now() + chrono::Duration::seconds(5);
    let unroutable = broker.schedule("orders", message(0), at).await.unwrap_err();
    assert_eq!(unroutable.kind(), ErrorKind::Unroutable, "{unroutable}");

    let mut sub = broker
        .subscribe("orders", "billing", SubscribeOptions::default())
        .await
        .unwrap();
    broker.schedule("orders", message(1), at).await.unwrap();
    // The group is full with the scheduled message: a publish, or a second schedule, waits and
    // fails now instead of the scheduled message failing silently later.
    let full = broker.schedule("orders", message(2), at).await.unwrap_err();
    assert_eq!(full.kind(), ErrorKind::Timeout, "{full}");
    assert_eq!(broker.depth("orders", "billing"), 1);
    let d = sub.next().await.unwrap().unwrap();
    assert_eq!(number(d.message()), 1);
    d.ack().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_redrive_dropped_while_waiting_for_room_loses_no_dead_letter() {
    let broker = MemoryBroker::with_config(MemoryConfig {
        group_capacity: 1,
        publish_timeout: Duration::from_secs(60),
        ..MemoryConfig::default()
    })
    .unwrap();
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .start(handler_fn(|_m: Message| async {
            Err::<(), _>(HandlerError::permanent("bad"))
        }))
        .await
        .unwrap();
    for n in 0..3 {
        broker.publish("orders", message(n)).await.unwrap();
        settle_tasks().await;
    }
    consumer.shutdown().await.unwrap();
    assert_eq!(broker.peek("orders", "billing", 10).await.unwrap().len(), 3);
    // Fill the group so the redrive has to wait for room, then give up on it.
    broker.publish("orders", message(9)).await.unwrap();
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        broker.redrive("orders", "billing", None),
    )
    .await;
    assert!(gave_up.is_err(), "the redrive should still be waiting");
    let left: Vec<u32> = broker
        .peek("orders", "billing", 10)
        .await
        .unwrap()
        .iter()
        .map(|d| number(&d.message))
        .collect();
    assert_eq!(left, [0, 1, 2], "dead letters lost by a dropped redrive");
}

/// A subscriber whose first subscription ends by itself after `first_lives_for` deliveries.
struct EndsOnce {
    broker: MemoryBroker,
    subscriptions: AtomicUsize,
    first_lives_for: usize,
}

struct Ending {
    inner: Box<dyn Subscription>,
    left: Option<usize>,
}

#[async_trait]
impl Subscription for Ending {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        if self.left == Some(0) {
            return None;
        }
        if let Some(left) = &mut self.left {
            *left -= 1;
        }
        self.inner.next().await
    }
    async fn close(&mut self) -> Result<()> {
        self.inner.close().await
    }
}

#[async_trait]
impl Subscriber for EndsOnce {
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let first = self.subscriptions.fetch_add(1, Ordering::SeqCst) == 0;
        let inner = self.broker.subscribe(topic, group, options).await?;
        Ok(Box::new(Ending {
            inner,
            left: first.then_some(self.first_lives_for),
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscription_that_ends_by_itself_is_restored_and_reported() {
    let broker = MemoryBroker::new();
    let subscriber = Arc::new(EndsOnce {
        broker: broker.clone(),
        subscriptions: AtomicUsize::new(0),
        first_lives_for: 2,
    });
    let handled = Arc::new(AtomicUsize::new(0));
    let consumer = Consumer::builder(subscriber.clone(), "orders", "billing")
        .start({
            let handled = handled.clone();
            handler_fn(move |_m: Message| {
                let handled = handled.clone();
                async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, HandlerError>(())
                }
            })
        })
        .await
        .unwrap();
    for n in 0..10 {
        broker.publish("orders", message(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        handled.load(Ordering::SeqCst),
        10,
        "the consumer stopped when its subscription ended"
    );
    assert_eq!(subscriber.subscriptions.load(Ordering::SeqCst), 2);
    assert_eq!(consumer.health(), ConsumerHealth::Running);
    assert_eq!(consumer.stats().interruptions, 1);
    consumer.shutdown().await.unwrap();
}

/// A subscriber that refuses every subscription after the first, for good (bad credentials).
struct RefusesAgain {
    inner: EndsOnce,
}

#[async_trait]
impl Subscriber for RefusesAgain {
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        if self.inner.subscriptions.load(Ordering::SeqCst) > 0 {
            return Err(Error::Auth("password rotated".into()));
        }
        self.inner.subscribe(topic, group, options).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_cannot_subscribe_again_stops_says_why_and_can_be_restarted() {
    let broker = MemoryBroker::new();
    let subscriber = Arc::new(RefusesAgain {
        inner: EndsOnce {
            broker: broker.clone(),
            subscriptions: AtomicUsize::new(0),
            first_lives_for: 0,
        },
    });
    let mut consumer = Consumer::builder(subscriber, "orders", "billing")
        .start(handler_fn(|_m: Message| async {
            Ok::<_, HandlerError>(())
        }))
        .await
        .unwrap();
    consumer.stopped().await;
    assert!(
        matches!(consumer.health(), ConsumerHealth::Stopped { error: Some(ref e) } if e.contains("password rotated")),
        "{:?}",
        consumer.health()
    );
    let err = consumer.shutdown().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);

    // Restarting works once the broker takes the subscription again.
    let fine = Arc::new(broker.clone());
    let consumer = Consumer::builder(fine, "orders", "billing")
        .start(handler_fn(|_m: Message| async {
            Ok::<_, HandlerError>(())
        }))
        .await
        .unwrap();
    let consumer = consumer.restart().await.unwrap();
    broker.publish("orders", message(1)).await.unwrap();
    settle_tasks().await;
    assert_eq!(consumer.stats().acked, 1);
    assert_eq!(consumer.health(), ConsumerHealth::Running);
    consumer.shutdown().await.unwrap();
}

/// A handler stack that is never ready, counting how often it is asked.
#[derive(Clone)]
struct NeverReady {
    asked: Arc<AtomicUsize>,
}

impl tower::Service<Incoming> for NeverReady {
    type Response = ();
    type Error = HandlerError;
    type Future = std::future::Ready<std::result::Result<(), HandlerError>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), HandlerError>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Err(HandlerError::transient("dependency down")))
    }
    fn call(&mut self, _req: Incoming) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stack_that_is_not_ready_is_asked_again_with_backoff_not_in_a_hot_loop() {
    let broker = MemoryBroker::new();
    let asked = Arc::new(AtomicUsize::new(0));
    let consumer = Consumer::builder(Arc::new(broker), "orders", "billing")
        .start(NeverReady {
            asked: asked.clone(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.shutdown().await.unwrap();
    let asked = asked.load(Ordering::SeqCst);
    assert!(
        (1..50).contains(&asked),
        "asked {asked} times in half a second"
    );
}

/// An idempotency store that fails to record completions.
struct ForgetfulStore {
    inner: MemoryIdempotencyStore,
}

#[async_trait]
impl IdempotencyStore for ForgetfulStore {
    async fn begin(&self, group: &str, key: &str) -> Result<Claim> {
        self.inner.begin(group, key).await
    }
    async fn complete(&self, _group: &str, _key: &str) -> Result<()> {
        Err(Error::connection("store unreachable", "connection reset"))
    }
    async fn abandon(&self, group: &str, key: &str) -> Result<()> {
        self.inner.abandon(group, key).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_failing_after_the_handler_succeeded_does_not_undo_the_success() {
    let broker = MemoryBroker::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .dedup(Arc::new(ForgetfulStore {
            inner: MemoryIdempotencyStore::default(),
        }))
        .redelivery(redelivery(3))
        .start({
            let calls = calls.clone();
            handler_fn(move |_m: Message| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, HandlerError>(())
                }
            })
        })
        .await
        .unwrap();
    broker.publish("orders", message(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(report.stats.acked, 1);
    assert_eq!(report.stats.redelivered, 0);
    assert_eq!(report.stats.dead_lettered, 0);
}

/// A subscriber whose settlement handles fail transiently the first `failures` times.
struct FlakySettlements {
    broker: MemoryBroker,
    failures: Arc<AtomicUsize>,
}

struct FlakySubscription {
    inner: Box<dyn Subscription>,
    failures: Arc<AtomicUsize>,
}

struct FlakySettle {
    inner: Box<dyn Settle>,
    failures: Arc<AtomicUsize>,
}

#[async_trait]
impl Settle for FlakySettle {
    async fn settle(&mut self, settlement: &Settlement) -> Result<()> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::Timeout("the broker did not answer".into()));
        }
        self.inner.settle(settlement).await
    }
}

#[async_trait]
impl Subscription for FlakySubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        let delivery = match self.inner.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        let (message, info, settle) = delivery.into_parts();
        let settle = FlakySettle {
            inner: settle,
            failures: self.failures.clone(),
        };
        Some(Ok(Delivery::new(message, info, Box::new(settle))))
    }
    async fn close(&mut self) -> Result<()> {
        self.inner.close().await
    }
}

#[async_trait]
impl Subscriber for FlakySettlements {
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(FlakySubscription {
            inner: self.broker.subscribe(topic, group, options).await?,
            failures: self.failures.clone(),
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn a_settlement_that_fails_transiently_is_retried_until_the_broker_takes_it() {
    let broker = MemoryBroker::new();
    let subscriber = Arc::new(FlakySettlements {
        broker: broker.clone(),
        failures: Arc::new(AtomicUsize::new(2)),
    });
    let consumer = Consumer::builder(subscriber, "orders", "billing")
        .start(handler_fn(|_m: Message| async {
            Ok::<_, HandlerError>(())
        }))
        .await
        .unwrap();
    broker.publish("orders", message(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(report.stats.received, 1, "delivered once");
    assert_eq!(report.stats.acked, 1);
    assert_eq!(report.stats.settle_failures, 0, "the retries succeeded");
    assert_eq!(broker.depth("orders", "billing"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_settlement_that_keeps_failing_gives_the_message_back_with_its_attempt_counted() {
    let broker = MemoryBroker::new();
    let subscriber = Arc::new(FlakySettlements {
        broker: broker.clone(),
        failures: Arc::new(AtomicUsize::new(5)),
    });
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let consumer = Consumer::builder(subscriber, "orders", "billing")
        .start({
            let attempts = attempts.clone();
            handler_fn(move |inc: Incoming| {
                let attempts = attempts.clone();
                async move {
                    attempts.lock().unwrap().push(inc.info.attempt);
                    Ok::<_, HandlerError>(())
                }
            })
        })
        .await
        .unwrap();
    broker.publish("orders", message(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(
        *attempts.lock().unwrap(),
        [1, 2],
        "given back once, then acked"
    );
    assert_eq!(report.stats.settle_failures, 1);
    assert_eq!(report.stats.acked, 1);
    assert_eq!(broker.depth("orders", "billing"), 0);
}
