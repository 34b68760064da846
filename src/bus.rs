//! `Bus`: the configured broker (publisher, subscriber, dead-letter access, scheduler where it
//! can) behind one broker-neutral handle.

use std::sync::Arc;

use busway_core::{
    Broker, Capabilities, Consumer, ConsumerBuilder, DeadLetters, Error, IdempotencyStore, Message,
    Publisher, Result, Scheduler, Subscriber,
};

use crate::config::{BrokerKind, BusConfig, ConsumerDefaults};

/// A connected broker behind broker-neutral trait objects.
///
/// Application code takes a `Bus` (or its parts) and stays the same when the configuration
/// switches brokers.
#[derive(Clone)]
pub struct Bus {
    kind: BrokerKind,
    broker: Arc<dyn Broker>,
    defaults: ConsumerDefaults,
    /// One store for every consumer of the bus (ids are kept per group).
    dedup: Option<Arc<dyn IdempotencyStore>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("broker", &self.kind)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects to the broker `config` selects.
    // With no adapter feature on, every arm returns early.
    #[allow(unreachable_code)]
    pub async fn connect(config: &BusConfig) -> Result<Self> {
        let broker: Arc<dyn Broker> = match config.broker {
            #[cfg(feature = "memory")]
            BrokerKind::Memory => Arc::new(busway_memory::MemoryBroker::with_config(
                config.memory.clone(),
            )?),
            #[cfg(feature = "rabbitmq")]
            BrokerKind::RabbitMq => {
                Arc::new(busway_rabbitmq::RabbitMqBroker::connect(config.rabbitmq.clone()).await?)
            }
            #[cfg(feature = "kafka")]
            BrokerKind::Kafka => {
                Arc::new(busway_kafka::KafkaBroker::connect(config.kafka.clone()).await?)
            }
            #[cfg(feature = "servicebus")]
            BrokerKind::ServiceBus => Arc::new(
                busway_servicebus::ServiceBusBroker::connect(config.servicebus.clone()).await?,
            ),
            #[allow(unreachable_patterns)] // every broker compiled in
            other => return Err(not_compiled_in(other)),
        };
        let dedup = match &config.consumer.dedup {
            Some(dedup) => {
                dedup.validate(&config.consumer.redelivery)?;
                Some(dedup.store())
            }
            None => None,
        };
        tracing::info!(broker = config.broker.as_str(), "bus connected");
        Ok(Self {
            kind: config.broker,
            broker,
            defaults: config.consumer.clone(),
            dedup,
        })
    }

    /// Whether this build of busway includes the adapter for `kind` (its cargo feature is on).
    pub fn is_compiled_in(kind: BrokerKind) -> bool {
        match kind {
            #[cfg(feature = "memory")]
            BrokerKind::Memory => true,
            #[cfg(feature = "rabbitmq")]
            BrokerKind::RabbitMq => true,
            #[cfg(feature = "kafka")]
            BrokerKind::Kafka => true,
            #[cfg(feature = "servicebus")]
            BrokerKind::ServiceBus => true,
            #[allow(unreachable_patterns)] // every broker compiled in
            _ => false,
        }
    }

    /// A bus on a fresh in-process broker with default settings.
    #[cfg(feature = "memory")]
    pub fn memory() -> Self {
        Self {
            kind: BrokerKind::Memory,
            broker: Arc::new(busway_memory::MemoryBroker::new()),
            defaults: ConsumerDefaults::default(),
            dedup: None,
        }
    }

    /// Which broker this is.
    pub fn broker(&self) -> BrokerKind {
        self.kind
    }
    /// What the broker can do.
    pub fn capabilities(&self) -> Capabilities {
        self.broker.capabilities()
    }
    /// The publisher.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        self.broker.clone()
    }
    /// The subscriber.
    pub fn subscriber(&self) -> Arc<dyn Subscriber> {
        self.broker.clone()
    }
    /// Dead-letter queue access.
    pub fn dead_letters(&self) -> Arc<dyn DeadLetters> {
        self.broker.clone()
    }
    /// The scheduler, when the broker can schedule (every broker busway ships can); check it
    /// once at startup rather than at the first scheduled message.
    ///
    /// ```
    /// let bus = busway::Bus::memory();
    /// let Some(scheduler) = bus.scheduler() else {
    ///     panic!("this service needs scheduled delivery; {:?} cannot", bus.broker());
    /// };
    /// # drop(scheduler);
    /// ```
    pub fn scheduler(&self) -> Option<Arc<dyn Scheduler>> {
        self.broker.clone().scheduler()
    }

    /// Publishes one message.
    pub async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.broker.publish(topic, message).await
    }

    /// A consumer of `topic` in `group`, with the configured consumer defaults applied.
    pub fn consumer(&self, topic: impl Into<String>, group: impl Into<String>) -> ConsumerBuilder {
        let d = &self.defaults;
        let mut builder = Consumer::builder(self.subscriber(), topic, group)
            .concurrency(d.concurrency)
            .retry(d.retry.clone())
            .redelivery(d.redelivery.clone())
            .drain_timeout(d.drain_timeout);
        if let Some(limit) = d.timeout {
            builder = builder.timeout(limit);
        }
        if let Some(breaker) = &d.circuit_breaker {
            builder = builder.circuit_breaker(breaker.clone());
        }
        if let Some(store) = &self.dedup {
            builder = builder.dedup(store.clone());
        }
        builder
    }
}

fn not_compiled_in(kind: BrokerKind) -> Error {
    Error::config(
        "broker",
        format!(
            "`{}` is not compiled in: enable busway's `{}` cargo feature",
            kind.as_str(),
            kind.as_str()
        ),
    )
}
