//! [`KafkaBroker`]: the publisher, subscriber and dead-letter access of the Kafka adapter.

use std::sync::Arc;

use async_trait::async_trait;
use busway_core::preflight::SizeLimit;
use busway_core::{
    Broker, Capabilities, Error, Message, Publisher, Result, Scheduler, SubscribeOptions,
    Subscriber, Subscription,
};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::codec::{OutRecord, add_due_header};
use crate::config::KafkaConfig;
use crate::error::{classify, creating};
use crate::publish::{Producer, Topics};
use crate::subscribe::{self, HandedOut};
use crate::topology;

/// A connection to a Kafka cluster: [`Publisher`], [`Subscriber`] and
/// [`DeadLetters`](busway_core::DeadLetters).
///
/// Cheap to clone; clones share one idempotent producer and one admin client. Each
/// subscription has its own consumer (a member of the busway group's consumer group).
///
/// ```no_run
/// use busway_core::{Message, Publisher};
/// use busway_kafka::{KafkaBroker, KafkaConfig};
///
/// # async fn run() -> busway_core::Result<()> {
/// let broker = KafkaBroker::connect(KafkaConfig {
///     bootstrap_servers: "127.0.0.1:9092".into(),
///     ..KafkaConfig::default()
/// })
/// .await?;
/// let order = Message::builder("/shop/orders", "shop.order.placed.v1")
///     .partition_key("customer-7")
///     .json(&serde_json::json!({"order": 42}))?
///     .build()?;
/// broker.publish("orders", order).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaBroker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Arc<KafkaConfig>,
    /// The one check before anything is published, keeping room for redelivery and
    /// dead-letter metadata under `max_message_bytes`.
    pub(crate) limit: SizeLimit,
    pub(crate) producer: Arc<Producer>,
    pub(crate) topics: Topics,
    pub(crate) handed_out: Arc<HandedOut>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl KafkaBroker {
    /// Validates `config`, creates the producer and admin client, and checks that the cluster
    /// answers (a metadata request within `request_timeout`).
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        config.validate()?;
        let limit = config.size_limit()?;
        config.warn_insecure_settings();
        let config = Arc::new(config);
        let producer = Arc::new(Producer::new(config.clone())?);
        let topics = Topics::new(config.clone())?;
        let probe: BaseConsumer = config
            .plain_consumer_config("busway-probe")
            .create()
            .map_err(|e| creating(&config, "creating a client", e))?;
        let timeout = config.request_timeout;
        tokio::task::spawn_blocking(move || probe.fetch_metadata(None, timeout))
            .await
            .map_err(|e| Error::Closed(format!("connect task failed: {e}")))?
            .map_err(|e| classify("connecting to the Kafka cluster", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                limit,
                producer,
                topics,
                handed_out: Arc::default(),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// Waits until every queued message is delivered (up to the delivery timeout).
    pub fn flush(&self) {
        self.inner.producer.flush();
    }

    /// Encodes `message` for `topic` after the publish check: names, the CloudEvents rules,
    /// and a size that leaves room for the metadata of a redelivery or dead letter, so that
    /// every message published can take those paths later.
    fn encode(&self, topic: &str, message: &Message) -> Result<OutRecord> {
        let record = OutRecord::from_message(message);
        self.inner.limit.check(topic, message, record.size())?;
        Ok(record)
    }

    async fn ensure_topic(&self, topic: &str) -> Result<()> {
        topology::validate("topic", topic)?;
        self.inner
            .topics
            .ensure(&[(topic.to_owned(), self.inner.config.partitions)])
            .await
    }
}

#[async_trait]
impl Publisher for KafkaBroker {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        let record = self.encode(topic, &message)?;
        self.ensure_topic(topic).await?;
        self.inner.producer.send(topic, record).await
    }

    /// Checks every message first (nothing is sent if one is too large), then sends them all at
    /// once and waits for every delivery report.
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let records = messages
            .iter()
            .map(|m| self.encode(topic, m))
            .collect::<Result<Vec<_>>>()?;
        self.ensure_topic(topic).await?;
        self.inner.producer.send_all(topic, records).await
    }
}

#[async_trait]
impl Scheduler for KafkaBroker {
    /// Kafka has no scheduled delivery: the message goes to `<topic>.scheduled` with its due
    /// time, and every group's subscription holds it back until then (pausing only that
    /// partition). It reaches every group that has joined the topic by the time it falls due,
    /// also one that joins after it was scheduled (as a RabbitMQ message routed when its TTL
    /// expires would). Within a partition of the scheduled topic, messages are released in
    /// order, so one due later holds back those behind it; give scheduled messages partition
    /// keys to spread them.
    async fn schedule(
        &self,
        topic: &str,
        message: Message,
        deliver_at: DateTime<Utc>,
    ) -> Result<()> {
        topology::validate("topic", topic)?;
        let scheduled = topology::scheduled(topic);
        let mut record = self.encode(&scheduled, &message)?;
        add_due_header(&mut record, deliver_at);
        self.inner
            .topics
            .ensure(&[(scheduled.clone(), self.inner.config.partitions)])
            .await?;
        self.inner.producer.send(&scheduled, record).await
    }
}

#[async_trait]
impl Subscriber for KafkaBroker {
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.capabilities().check_subscribe(&options)?;
        subscribe::subscribe(&self.inner, topic, group, options).await
    }
}

impl Broker for KafkaBroker {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::new("Kafka");
        caps.per_key_ordering = true;
        caps.scheduling = true;
        // A new group can start at the beginning of each partition's log.
        caps.replays_history = true;
        caps.survives_broker_restart = true;
        caps.remote = true;
        // An ack marks the offset done; it is committed later (`commit_interval`), and a group
        // that rebalances before then hands the record to a member again.
        caps.confirms_settlement = false;
        caps
    }

    fn scheduler(self: Arc<Self>) -> Option<Arc<dyn Scheduler>> {
        Some(self)
    }
}
