//! `Bus`: the publisher, subscriber and dead-letter access of the configured broker.

use std::sync::Arc;

use busway_core::{
    Consumer, ConsumerBuilder, DeadLetters, Error, IdempotencyStore, Message, Publisher, Result,
    Subscriber,
};

use crate::config::{BrokerKind, BusConfig, ConsumerDefaults};

/// A connected broker behind broker-neutral trait objects.
///
/// Application code takes a `Bus` (or its parts) and stays the same when the configuration
/// switches brokers.
#[derive(Clone)]
pub struct Bus {
    kind: BrokerKind,
    publisher: Arc<dyn Publisher>,
    subscriber: Arc<dyn Subscriber>,
    dead_letters: Arc<dyn DeadLetters>,
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
        let (publisher, subscriber, dead_letters) = match config.broker {
            #[cfg(feature = "memory")]
            BrokerKind::Memory => {
                let broker = busway_memory::MemoryBroker::with_config(config.memory.clone())?;
                parts(broker)
            }
            #[cfg(feature = "rabbitmq")]
            BrokerKind::RabbitMq => {
                parts(busway_rabbitmq::RabbitMqBroker::connect(config.rabbitmq.clone()).await?)
            }
            #[cfg(feature = "kafka")]
            BrokerKind::Kafka => {
                parts(busway_kafka::KafkaBroker::connect(config.kafka.clone()).await?)
            }
            #[cfg(feature = "servicebus")]
            BrokerKind::ServiceBus => parts(
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
            publisher,
            subscriber,
            dead_letters,
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
        let (publisher, subscriber, dead_letters) = parts(busway_memory::MemoryBroker::new());
        Self {
            kind: BrokerKind::Memory,
            publisher,
            subscriber,
            dead_letters,
            defaults: ConsumerDefaults::default(),
            dedup: None,
        }
    }

    /// Which broker this is.
    pub fn broker(&self) -> BrokerKind {
        self.kind
    }
    /// The publisher.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        self.publisher.clone()
    }
    /// The subscriber.
    pub fn subscriber(&self) -> Arc<dyn Subscriber> {
        self.subscriber.clone()
    }
    /// Dead-letter queue access.
    pub fn dead_letters(&self) -> Arc<dyn DeadLetters> {
        self.dead_letters.clone()
    }

    /// Publishes one message.
    pub async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.publisher.publish(topic, message).await
    }

    /// A consumer of `topic` in `group`, with the configured consumer defaults applied.
    pub fn consumer(&self, topic: impl Into<String>, group: impl Into<String>) -> ConsumerBuilder {
        let d = &self.defaults;
        let mut builder = Consumer::builder(self.subscriber.clone(), topic, group)
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

#[allow(dead_code)] // unused when no adapter feature is on
fn parts<B>(
    broker: B,
) -> (
    Arc<dyn Publisher>,
    Arc<dyn Subscriber>,
    Arc<dyn DeadLetters>,
)
where
    B: Publisher + Subscriber + DeadLetters + Clone + 'static,
{
    (
        Arc::new(broker.clone()),
        Arc::new(broker.clone()),
        Arc::new(broker),
    )
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
