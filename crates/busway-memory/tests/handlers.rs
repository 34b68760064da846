//! Handlers as async functions of extractors, with state; routing by type; user layers in the
//! stack; explicit outcomes. On the in-process broker with tokio's paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use busway_core::{
    Attributes, Backoff, Consumer, DeadLetterReason, DeadLetters, DeliveryInfo, ErrorKind,
    Extension, FromRef, HandlerError, Incoming, Json, Message, Outcome, Publisher,
    RedeliveryPolicy, RetryPolicy, Router, State,
};
use busway_memory::MemoryBroker;
use futures::future::BoxFuture;
use tower::{Layer, Service};

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order: u64,
}

#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<String>>>);

impl Ledger {
    fn write(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Clone)]
struct App {
    ledger: Ledger,
    currency: &'static str,
}

impl FromRef<App> for Ledger {
    fn from_ref(app: &App) -> Ledger {
        app.ledger.clone()
    }
}

fn event(ty: &str, order: u64) -> Message {
    Message::builder("/shop", ty)
        .subject(format!("orders/{order}"))
        .extension("tenant", "acme")
        .json(&OrderPlaced { order })
        .unwrap()
        .build()
        .unwrap()
}

async fn settle_tasks() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

async fn bill(
    State(app): State<App>,
    State(ledger): State<Ledger>,
    Json(placed): Json<OrderPlaced>,
    attrs: Attributes,
    info: DeliveryInfo,
) -> Result<(), HandlerError> {
    ledger.write(format!(
        "bill {} in {} for {} ({}) attempt {}",
        placed.order,
        app.currency,
        attrs.extension("tenant").unwrap_or("?"),
        attrs.subject.as_deref().unwrap_or_default(),
        info.attempt
    ));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_handler_takes_several_extractors_and_the_consumers_state() {
    let broker = MemoryBroker::new();
    let ledger = Ledger::default();
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .state(App {
            ledger: ledger.clone(),
            currency: "EUR",
        })
        .start(bill)
        .await
        .unwrap();
    broker
        .publish("orders", event("shop.order.placed.v1", 7))
        .await
        .unwrap();
    settle_tasks().await;
    consumer.shutdown().await.unwrap();
    assert_eq!(
        ledger.lines(),
        ["bill 7 in EUR for acme (orders/7) attempt 1"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_router_dispatches_by_type_and_dead_letters_types_nobody_handles() {
    let broker = MemoryBroker::new();
    let ledger = Ledger::default();
    async fn cancel(State(ledger): State<Ledger>, msg: Message) {
        ledger.write(format!("cancel {}", msg.subject().unwrap_or_default()));
    }
    let router = Router::new()
        .route("shop.order.placed.v1", bill)
        .route("shop.order.cancelled.v1", cancel);
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .state(App {
            ledger: ledger.clone(),
            currency: "USD",
        })
        .start(router)
        .await
        .unwrap();
    for (ty, n) in [
        ("shop.order.placed.v1", 1),
        ("shop.order.cancelled.v1", 2),
        ("shop.order.shipped.v1", 3),
    ] {
        broker.publish("orders", event(ty, n)).await.unwrap();
    }
    settle_tasks().await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(
        ledger.lines(),
        [
            "bill 1 in USD for acme (orders/1) attempt 1",
            "cancel orders/2"
        ]
    );
    assert_eq!(report.stats.dead_lettered, 1);
    let dead = broker.peek("orders", "billing", 10).await.unwrap();
    let meta = dead[0].metadata.as_ref().unwrap();
    assert_eq!(meta.reason, DeadLetterReason::UnknownType);
    assert!(
        meta.error.contains("shop.order.shipped.v1"),
        "{}",
        meta.error
    );
    assert!(
        meta.error.contains("shop.order.cancelled.v1"),
        "{}",
        meta.error
    );
}

#[tokio::test]
async fn a_router_with_two_handlers_for_one_type_is_refused_at_start() {
    let broker = MemoryBroker::new();
    async fn one(_m: Message) {}
    async fn two(_m: Message) {}
    let err = Consumer::builder(Arc::new(broker), "orders", "billing")
        .start(Router::new().route("t", one).route("t", two))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("more than one handler for type t"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn explicit_outcomes_retry_or_dead_letter_with_the_handlers_reason() {
    let broker = MemoryBroker::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let consumer = Consumer::builder(Arc::new(broker.clone()), "payments", "ledger")
        .retry(RetryPolicy::none())
        .redelivery(RedeliveryPolicy::new(
            2,
            Backoff::Fixed {
                delay: Duration::from_secs(1),
            },
        ))
        .state(calls.clone())
        .start(
            |State(calls): State<Arc<AtomicUsize>>, Json(p): Json<OrderPlaced>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                match p.order {
                    0 => Outcome::dead_letter("invalid_order", "order 0 does not exist"),
                    1 => Outcome::retry("the bank is busy"),
                    _ => Outcome::Done,
                }
            },
        )
        .await
        .unwrap();
    for n in [0, 1, 2] {
        broker.publish("payments", event("pay", n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4, "0 once, 1 twice, 2 once");
    assert_eq!(report.stats.acked, 1);
    assert_eq!(report.stats.dead_lettered, 2);
    let mut reasons: Vec<String> = broker
        .peek("payments", "ledger", 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.metadata.as_ref().unwrap().reason.as_str().to_owned())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["invalid_order", "max_attempts_exceeded"]);
}

/// A layer that attaches a tenant to every delivery and counts the attempts it sees.
#[derive(Clone)]
struct TenantLayer {
    seen: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Tenant(&'static str);

#[derive(Clone)]
struct TenantService<S> {
    inner: S,
    seen: Arc<AtomicUsize>,
}

impl<S> Layer<S> for TenantLayer {
    type Service = TenantService<S>;
    fn layer(&self, inner: S) -> TenantService<S> {
        TenantService {
            inner,
            seen: self.seen.clone(),
        }
    }
}

impl<S> Service<Incoming> for TenantService<S>
where
    S: Service<Incoming, Response = (), Error = HandlerError> + Send,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut incoming: Incoming) -> Self::Future {
        self.seen.fetch_add(1, Ordering::SeqCst);
        incoming.extensions.insert(Tenant("acme"));
        Box::pin(self.inner.call(incoming))
    }
}

#[tokio::test(start_paused = true)]
async fn user_layers_run_per_attempt_inside_retry_and_feed_extensions_to_handlers() {
    let broker = MemoryBroker::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let tenants = Ledger::default();
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .retry(RetryPolicy::fixed(Duration::from_millis(10), 3))
        .layer(TenantLayer { seen: seen.clone() })
        .state(tenants.clone())
        .start(
            |Extension(tenant): Extension<Tenant>,
             State(ledger): State<Ledger>,
             info: DeliveryInfo| async move {
                ledger.write(tenant.0.to_owned());
                if ledger.lines().len() < 3 {
                    return Err(HandlerError::transient("not yet"));
                }
                let _ = info;
                Ok(())
            },
        )
        .await
        .unwrap();
    broker.publish("orders", event("t", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(report.stats.acked, 1);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "the layer saw every attempt"
    );
    assert_eq!(tenants.lines(), ["acme", "acme", "acme"]);
}

#[tokio::test(start_paused = true)]
async fn a_missing_extension_dead_letters_with_a_reason_that_names_it() {
    let broker = MemoryBroker::new();
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .start(|Extension(_t): Extension<Tenant>| async {})
        .await
        .unwrap();
    broker.publish("orders", event("t", 1)).await.unwrap();
    settle_tasks().await;
    consumer.shutdown().await.unwrap();
    let dead = broker.peek("orders", "billing", 10).await.unwrap();
    let meta = dead[0].metadata.as_ref().unwrap();
    assert_eq!(meta.reason.as_str(), "missing_extension");
    assert!(meta.error.contains("Tenant"), "{}", meta.error);
}

#[tokio::test(start_paused = true)]
async fn undecodable_json_is_a_permanent_undecodable_rejection() {
    let broker = MemoryBroker::new();
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .start(|Json(_p): Json<OrderPlaced>| async {})
        .await
        .unwrap();
    let bad = Message::builder("/shop", "t")
        .data("not json")
        .build()
        .unwrap();
    broker.publish("orders", bad).await.unwrap();
    settle_tasks().await;
    let report = consumer.shutdown().await.unwrap();
    assert_eq!(report.stats.dead_lettered, 1);
    assert_eq!(report.stats.redelivered, 0);
    let dead = broker.peek("orders", "billing", 10).await.unwrap();
    assert_eq!(
        dead[0].metadata.as_ref().unwrap().reason,
        DeadLetterReason::Undecodable
    );
}
