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
use tower::{Layer, Service, ServiceBuilder};

pub use settle::{AlertHook, DeadLetterAlert};

use crate::broker::{Ordering, StartPosition, SubscribeOptions, Subscriber};
use crate::error::{Error, Result};
use crate::handler::{HandlerError, Incoming, IntoConsumerService};
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
            state: (),
            layers: Vec::new(),
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

/// A user layer, applied to the boxed stack below it.
type UserLayer = Arc<
    dyn Fn(
            BoxCloneService<Incoming, (), HandlerError>,
        ) -> BoxCloneService<Incoming, (), HandlerError>
        + Send
        + Sync,
>;

/// Configures and starts a consumer; `S` is the state its handlers extract with
/// [`State`](crate::State).
#[must_use]
pub struct ConsumerBuilder<S = ()> {
    state: S,
    layers: Vec<UserLayer>,
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

impl<S: Clone + Send + Sync + 'static> ConsumerBuilder<S> {
    /// Sets the state handlers extract with [`State`](crate::State) (once for the consumer;
    /// cloned per delivery, so share what is expensive behind an `Arc`).
    ///
    /// ```
    /// use busway_core::{Consumer, HandlerError, Message, State};
    /// # async fn run(subscriber: std::sync::Arc<dyn busway_core::Subscriber>) -> busway_core::Result<()> {
    /// #[derive(Clone)]
    /// struct App { greeting: &'static str }
    ///
    /// async fn greet(State(app): State<App>, msg: Message) -> Result<(), HandlerError> {
    ///     println!("{} {}", app.greeting, msg.id());
    ///     Ok(())
    /// }
    ///
    /// let consumer = Consumer::builder(subscriber, "orders", "billing")
    ///     .state(App { greeting: "hello" })
    ///     .start(greet)
    ///     .await?;
    /// # consumer.shutdown().await?; Ok(()) }
    /// ```
    pub fn state<S2: Clone + Send + Sync + 'static>(self, state: S2) -> ConsumerBuilder<S2> {
        ConsumerBuilder {
            state,
            layers: self.layers,
            subscriber: self.subscriber,
            topic: self.topic,
            group: self.group,
            options: self.options,
            prefetch: self.prefetch,
            concurrency: self.concurrency,
            retry: self.retry,
            redelivery: self.redelivery,
            timeout: self.timeout,
            breaker: self.breaker,
            dedup: self.dedup,
            alert: self.alert,
            drain_timeout: self.drain_timeout,
            auto_ack: self.auto_ack,
        }
    }

    /// Adds a tower layer of your own around the handler. Layers run per attempt, inside the
    /// runtime's own: observe → circuit breaker → dedup → retry → timeout → **your layers** (the
    /// first added outermost) → catch panic → handler. So a retried attempt passes through them
    /// again, the timeout covers them, and a panic in them is caught like the handler's.
    ///
    /// ```
    /// use busway_core::{Consumer, Extension, Incoming, Message};
    /// # async fn run(subscriber: std::sync::Arc<dyn busway_core::Subscriber>) -> busway_core::Result<()> {
    /// #[derive(Clone)]
    /// struct Tenant(String);
    ///
    /// let consumer = Consumer::builder(subscriber, "orders", "billing")
    ///     // Any tower layer fits; this one attaches a value handlers extract.
    ///     .layer(tower::util::MapRequestLayer::new(|mut incoming: Incoming| {
    ///         let tenant = incoming.message.extension("tenant").unwrap_or("default").to_owned();
    ///         incoming.extensions.insert(Tenant(tenant));
    ///         incoming
    ///     }))
    ///     .start(|Extension(tenant): Extension<Tenant>, msg: Message| async move {
    ///         println!("{} for {}", msg.id(), tenant.0)
    ///     })
    ///     .await?;
    /// # consumer.shutdown().await?; Ok(()) }
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxCloneService<Incoming, (), HandlerError>> + Send + Sync + 'static,
        L::Service: Service<Incoming, Response = (), Error = HandlerError> + Clone + Send + 'static,
        <L::Service as Service<Incoming>>::Future: Send + 'static,
    {
        self.layers.push(Arc::new(move |inner| {
            BoxCloneService::new(layer.layer(inner))
        }));
        self
    }

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
    /// timeout → your layers → catch panic → handler. Useful to test a stack without a broker.
    pub fn into_service<M>(
        &self,
        handler: impl IntoConsumerService<M, S>,
    ) -> Result<BoxCloneService<Incoming, (), HandlerError>> {
        let mut inner = BoxCloneService::new(
            CatchPanicLayer.layer(handler.into_consumer_service(self.state.clone())?),
        );
        for layer in self.layers.iter().rev() {
            inner = layer(inner);
        }
        let stack = ServiceBuilder::new()
            .layer(ObserveLayer)
            .option_layer(self.breaker.clone().map(CircuitBreakerLayer::new))
            .option_layer(self.dedup.clone().map(DedupLayer::new))
            .layer(RetryLayer::new(self.retry.clone()))
            .option_layer(self.timeout.map(TimeoutLayer::new))
            .service(inner);
        Ok(BoxCloneService::new(stack))
    }

    /// Subscribes and starts consuming in a background task; returns once subscribed.
    ///
    /// `handler` is an async function of extractors (see [`Handler`](crate::Handler)), a
    /// [`Router`](crate::Router), or any `tower::Service<Incoming>`.
    pub async fn start<M>(self, handler: impl IntoConsumerService<M, S>) -> Result<ConsumerHandle> {
        crate::preflight::check_name("consumer.topic", &self.topic)?;
        crate::preflight::check_name("consumer.group", &self.group)?;
        let service = self.into_service(handler)?;
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

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("topic", &self.spec.topic)
            .field("group", &self.spec.group)
            .field("health", &self.health())
            .field("stats", &self.stats())
            .finish()
    }
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
