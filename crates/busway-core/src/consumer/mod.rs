//! The consumer runtime: pulls deliveries, runs the handler stack with bounded concurrency (and
//! per-key order where asked), settles each delivery, and shuts down gracefully.
//!
//! ```
//! use std::time::Duration;
//! use busway_core::{handler_fn, Consumer, HandlerError, Message, RetryPolicy};
//! # async fn run(subscriber: std::sync::Arc<dyn busway_core::Subscriber>) -> busway_core::Result<()> {
//! let consumer = Consumer::builder(subscriber, "orders", "billing")
//!     .concurrency(16)
//!     .retry(RetryPolicy::exponential(Duration::from_millis(50), 3))
//!     .timeout(Duration::from_secs(30))
//!     .start(handler_fn(|msg: Message| async move {
//!         println!("order event {}", msg.id());
//!         Ok::<_, HandlerError>(())
//!     }))
//!     .await?;
//! // ... later, on SIGTERM:
//! let report = consumer.shutdown().await?;
//! println!("acked {}", report.stats.acked);
//! # Ok(()) }
//! ```

mod lanes;
mod runtime;
mod settle;
mod supervise;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder};

pub use settle::{AlertHook, DeadLetterAlert};

use crate::broker::{Ordering, StartPosition, SubscribeOptions, Subscriber};
use crate::error::{Error, Result};
use crate::handler::{HandlerError, Incoming};
use crate::idempotency::IdempotencyStore;
use crate::middleware::{
    CatchPanicLayer, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, DedupLayer,
    ObserveLayer, RetryLayer, TimeoutLayer,
};
use crate::policy::{RedeliveryPolicy, RetryPolicy};

/// Entry point of the consumer runtime.
pub struct Consumer;

impl Consumer {
    /// Starts configuring a consumer of `topic` as a member of `group`.
    pub fn builder(
        subscriber: Arc<dyn Subscriber>,
        topic: impl Into<String>,
        group: impl Into<String>,
    ) -> ConsumerBuilder {
        ConsumerBuilder {
            subscriber,
            topic: topic.into(),
            group: group.into(),
            options: SubscribeOptions::default(),
            prefetch: None,
            concurrency: 8,
            retry: RetryPolicy::default(),
            redelivery: RedeliveryPolicy::default(),
            timeout: None,
            breaker: None,
            dedup: None,
            alert: None,
            drain_timeout: Duration::from_secs(30),
            auto_ack: false,
        }
    }
}

/// Configures and starts a consumer.
#[must_use]
pub struct ConsumerBuilder {
    subscriber: Arc<dyn Subscriber>,
    topic: String,
    group: String,
    options: SubscribeOptions,
    prefetch: Option<usize>,
    concurrency: usize,
    retry: RetryPolicy,
    redelivery: RedeliveryPolicy,
    timeout: Option<Duration>,
    breaker: Option<CircuitBreaker>,
    dedup: Option<Arc<dyn IdempotencyStore>>,
    alert: Option<AlertHook>,
    drain_timeout: Duration,
    auto_ack: bool,
}

impl ConsumerBuilder {
    /// Deliveries handled at once (default 8). Prefetch follows it unless set explicitly.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
    /// Deliveries the broker may push ahead (default: twice the concurrency).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n.max(1));
        self
    }
    /// Where a new group starts.
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.options.start = start;
        self
    }
    /// Handles messages with the same partition key one at a time, in order.
    pub fn ordered_by_key(mut self) -> Self {
        self.options.ordering = Ordering::PerKey;
        self
    }
    /// In-process retries (default: 3 attempts, exponential from 100 ms).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Broker redeliveries before dead-lettering (default: 5 deliveries, exponential from 1 s).
    pub fn redelivery(mut self, policy: RedeliveryPolicy) -> Self {
        self.redelivery = policy;
        self
    }
    /// Fails an attempt that runs longer than `limit`, transiently.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }
    /// Stops taking deliveries while the handler keeps failing.
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.breaker = Some(CircuitBreaker::new(config));
        self
    }
    /// Uses an existing breaker (to observe its state, or share it between consumers).
    pub fn circuit_breaker_shared(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }
    /// Runs each message's handler at most once per group, per the store.
    pub fn dedup(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.dedup = Some(store);
        self
    }
    /// Calls `hook` on every dead-lettering.
    pub fn on_dead_letter(
        mut self,
        hook: impl Fn(&DeadLetterAlert) + Send + Sync + 'static,
    ) -> Self {
        self.alert = Some(Arc::new(hook));
        self
    }
    /// How long shutdown waits for in-flight handlers before giving their deliveries back to the
    /// broker (default 30 s).
    pub fn drain_timeout(mut self, limit: Duration) -> Self {
        self.drain_timeout = limit;
        self
    }
    /// Acknowledges each delivery before running its handler: at-most-once, failures are only
    /// logged. Off by default.
    pub fn auto_ack(mut self, on: bool) -> Self {
        self.auto_ack = on;
        self
    }

    /// Wraps `handler` in the configured middleware: observe → circuit breaker → dedup → retry →
    /// timeout → catch panic → handler. Useful to test a stack without a broker.
    pub fn into_service<H>(&self, handler: H) -> BoxCloneService<Incoming, (), HandlerError>
    where
        H: Service<Incoming, Response = (), Error = HandlerError> + Clone + Send + 'static,
        H::Future: Send + 'static,
    {
        let stack = ServiceBuilder::new()
            .layer(ObserveLayer)
            .option_layer(self.breaker.clone().map(CircuitBreakerLayer::new))
            .option_layer(self.dedup.clone().map(DedupLayer::new))
            .layer(RetryLayer::new(self.retry.clone()))
            .option_layer(self.timeout.map(TimeoutLayer::new))
            .layer(CatchPanicLayer)
            .service(handler);
        BoxCloneService::new(stack)
    }

    /// Subscribes and starts consuming in a background task; returns once subscribed.
    pub async fn start<H>(self, handler: H) -> Result<ConsumerHandle>
    where
        H: Service<Incoming, Response = (), Error = HandlerError> + Clone + Send + 'static,
        H::Future: Send + 'static,
    {
        crate::preflight::check_name("consumer.topic", &self.topic)?;
        crate::preflight::check_name("consumer.group", &self.group)?;
        let service = self.into_service(handler);
        let options = self
            .options
            .clone()
            .prefetch(self.prefetch.unwrap_or(self.concurrency * 2));
        let spec = Arc::new(supervise::Spec {
            subscriber: self.subscriber,
            topic: self.topic,
            group: self.group,
            options,
        });
        let settings = Arc::new(runtime::Settings {
            redelivery: self.redelivery,
            alert: self.alert,
            auto_ack: self.auto_ack,
            ordering: self.options.ordering,
            concurrency: self.concurrency,
            drain_timeout: self.drain_timeout,
        });
        ConsumerHandle::launch(spec, service, settings, Arc::new(Stats::default())).await
    }
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) received: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) settle_failures: AtomicU64,
    pub(crate) interruptions: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, AtomicOrdering::Relaxed);
    }
    fn snapshot(&self) -> ConsumerStats {
        let get = |c: &AtomicU64| c.load(AtomicOrdering::Relaxed);
        ConsumerStats {
            received: get(&self.received),
            acked: get(&self.acked),
            redelivered: get(&self.redelivered),
            dead_lettered: get(&self.dead_lettered),
            settle_failures: get(&self.settle_failures),
            interruptions: get(&self.interruptions),
        }
    }
}

/// Counters of a running consumer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Deliveries taken from the broker.
    pub received: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Deliveries given back for redelivery.
    pub redelivered: u64,
    /// Deliveries dead-lettered.
    pub dead_lettered: u64,
    /// Settlements the broker refused or could not take, after retries (the message was given
    /// back to the broker, or redelivered later in place of a dead letter that could not be
    /// written).
    pub settle_failures: u64,
    /// Times the subscription ended or failed by itself and was restored.
    pub interruptions: u64,
}

/// What a consumer did, returned by [`ConsumerHandle::shutdown`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerReport {
    /// Final counters.
    pub stats: ConsumerStats,
    /// In-flight deliveries still unfinished at the drain deadline, given back to the broker.
    pub abandoned: u64,
}

/// How a consumer is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerHealth {
    /// Pulling and handling deliveries.
    Running,
    /// The subscription ended or failed by itself; subscribing again, with backoff.
    Recovering {
        /// Why the last try failed.
        error: String,
        /// Tries so far.
        attempts: u32,
    },
    /// Stopped: by [`ConsumerHandle::shutdown`] (`error` is `None`), or because the broker
    /// refused a new subscription in a way waiting cannot fix (bad credentials, configuration).
    Stopped {
        /// Why it stopped by itself.
        error: Option<String>,
    },
}

/// A running consumer.
///
/// A subscription that ends or fails by itself is restored with backoff (an ERROR event and
/// `busway_consumer_interruptions_total` each time); [`health`](Self::health) says how it is
/// doing. When the broker refuses for good, the consumer stops, [`shutdown`](Self::shutdown)
/// returns the error, and [`restart`](Self::restart) starts it again once the cause is fixed.
///
/// Dropping the handle stops the consumer as [`shutdown`](Self::shutdown) would, without waiting.
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<ConsumerReport>>,
    stats: Arc<Stats>,
    health: watch::Receiver<ConsumerHealth>,
    spec: Arc<supervise::Spec>,
    service: BoxCloneService<Incoming, (), HandlerError>,
    settings: Arc<runtime::Settings>,
}

impl ConsumerHandle {
    /// Subscribes and spawns the runtime.
    async fn launch(
        spec: Arc<supervise::Spec>,
        service: BoxCloneService<Incoming, (), HandlerError>,
        settings: Arc<runtime::Settings>,
        stats: Arc<Stats>,
    ) -> Result<Self> {
        let subscription = spec.subscribe().await?;
        let (stop, stopped) = watch::channel(false);
        let (health_tx, health) = watch::channel(ConsumerHealth::Running);
        let runtime = runtime::Runtime {
            spec: spec.clone(),
            subscription,
            service: service.clone(),
            stats: stats.clone(),
            settings: settings.clone(),
            health: health_tx,
        };
        tracing::info!(topic = %spec.topic, group = %spec.group, "consumer started");
        let task = tokio::spawn(runtime.run(stopped));
        Ok(Self {
            stop,
            task,
            stats,
            health,
            spec,
            service,
            settings,
        })
    }

    /// Live counters.
    pub fn stats(&self) -> ConsumerStats {
        self.stats.snapshot()
    }

    /// Whether the consumer is running, recovering its subscription, or stopped (and why).
    pub fn health(&self) -> ConsumerHealth {
        self.health.borrow().clone()
    }

    /// Whether the consumer has stopped by itself (its broker refused a new subscription).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the consumer stops by itself; returns at once if it already has.
    pub async fn stopped(&mut self) {
        let _ = self
            .health
            .wait_for(|h| matches!(h, ConsumerHealth::Stopped { .. }))
            .await;
    }

    /// Graceful shutdown: stop fetching, give back prefetched deliveries, let in-flight handlers
    /// finish (up to the drain timeout) and settle them, then return what happened.
    ///
    /// Returns the error that stopped the consumer, if it stopped by itself.
    pub async fn shutdown(self) -> Result<ConsumerReport> {
        // Err only if the runtime is already gone, which is fine.
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| Error::Closed(format!("consumer task failed: {e}")))?
    }

    /// Stops the consumer (gracefully, as [`shutdown`](Self::shutdown)) and starts it again with
    /// the same handler and settings, keeping its counters. Fails when the broker still refuses
    /// the subscription.
    pub async fn restart(self) -> Result<ConsumerHandle> {
        let (spec, service, settings, stats) = (
            self.spec.clone(),
            self.service.clone(),
            self.settings.clone(),
            self.stats.clone(),
        );
        if let Err(e) = self.shutdown().await {
            tracing::info!(error = %e, "restarting a consumer that had stopped by itself");
        }
        Self::launch(spec, service, settings, stats).await
    }
}
