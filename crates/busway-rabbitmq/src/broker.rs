//! The broker handle: configuration, the two supervised connections and shared caches.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use busway_core::preflight::SizeLimit;
use busway_core::{Broker, Capabilities, Result, Scheduler};

use crate::config::RabbitMqConfig;
use crate::connection::{ChannelSlot, Settings, Supervised};
use crate::topology::Topology;

/// busway's RabbitMQ adapter: a [`Publisher`](busway_core::Publisher),
/// [`Subscriber`](busway_core::Subscriber) and [`DeadLetters`](busway_core::DeadLetters) on
/// one broker.
///
/// Cheap to clone; clones share the connections. It keeps two connections, one for
/// publishing and one for consuming (RabbitMQ's advice: flow control throttling publishers must
/// not stall acks), each re-established with backoff when lost. Dropping the last clone closes
/// them.
///
/// ```no_run
/// use busway_core::{Message, Publisher, SubscribeOptions, Subscriber, Subscription};
/// use busway_rabbitmq::{RabbitMqBroker, RabbitMqConfig};
///
/// # #[tokio::main] async fn main() -> busway_core::Result<()> {
/// let broker = RabbitMqBroker::connect(RabbitMqConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")).await?;
/// // The group's queue `orders.billing` exists (and receives) from here on.
/// let mut sub = broker.subscribe("orders", "billing", SubscribeOptions::default()).await?;
/// broker.publish("orders", Message::builder("/shop", "order.placed").data("42").build()?).await?;
/// if let Some(delivery) = sub.next().await {
///     let delivery = delivery?;
///     assert_eq!(delivery.message().data().as_ref(), b"42");
///     delivery.ack().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RabbitMqBroker {
    pub(crate) shared: Arc<Shared>,
}

/// State shared by every clone of a broker handle and by its deliveries.
pub(crate) struct Shared {
    pub(crate) config: RabbitMqConfig,
    /// Publishing, and the republishing behind redelivery, dead-lettering and redrive.
    pub(crate) publish: Supervised,
    /// Consumers and dead-letter inspection.
    pub(crate) consume: Supervised,
    /// The confirm channel all publishes share (confirms are pipelined on it).
    pub(crate) publish_channel: ChannelSlot,
    /// Declarations made for publishing (exchanges, wait and schedule queues).
    pub(crate) publish_admin: ChannelSlot,
    pub(crate) topology: Topology,
    /// The broker's size limit and the smaller one a publish must meet.
    pub(crate) limit: SizeLimit,
    /// Groups seen by this handle, for [`DeadLetters::list`](busway_core::DeadLetters::list).
    known_groups: Mutex<BTreeSet<(String, String)>>,
}

impl Shared {
    pub(crate) fn remember_group(&self, topic: &str, group: &str) {
        self.known_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.to_owned(), group.to_owned()));
    }

    pub(crate) fn known_groups(&self) -> Vec<(String, String)> {
        self.known_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

impl fmt::Debug for RabbitMqBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqBroker")
            .field("config", &self.shared.config)
            .field(
                "publish_generation",
                &self.shared.publish.current_generation(),
            )
            .field(
                "consume_generation",
                &self.shared.consume.current_generation(),
            )
            .finish_non_exhaustive()
    }
}

impl RabbitMqBroker {
    /// Connects to the broker of `config.url`.
    ///
    /// Fails when the configuration is invalid, the broker cannot be reached
    /// ([`ErrorKind::Connection`](busway_core::ErrorKind::Connection)) or refuses the credentials
    /// ([`ErrorKind::Auth`](busway_core::ErrorKind::Auth)). Once connected, lost connections are
    /// re-established in the background.
    pub async fn connect(config: RabbitMqConfig) -> Result<Self> {
        let uri = config.validate()?;
        let limit = config.size_limit()?;
        let tls = config.tls.load()?;
        let base = config
            .connection_name
            .clone()
            .unwrap_or_else(|| "busway".to_owned());
        let settings = |role: &str| Settings {
            uri: uri.clone(),
            tls: tls.clone(),
            name: format!("{base} {role}"),
            reconnect: config.reconnect.clone(),
            display: config.redacted_url(),
        };
        let publish = Supervised::connect(settings("publish")).await?;
        let consume = Supervised::connect(settings("consume")).await?;
        tracing::info!(url = %config.redacted_url(), "connected to RabbitMQ");
        Ok(Self {
            shared: Arc::new(Shared {
                topology: Topology::new(config.queue_type),
                limit,
                config,
                publish,
                consume,
                publish_channel: ChannelSlot::new("publishing", true),
                publish_admin: ChannelSlot::new("declaring topology", false),
                known_groups: Mutex::new(BTreeSet::new()),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RabbitMqConfig {
        &self.shared.config
    }
}

impl Broker for RabbitMqBroker {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::new("RabbitMQ");
        // Single-active-consumer queues.
        caps.per_key_ordering = true;
        caps.scheduling = true;
        // Schedule queues hold a message for its TTL, a 32-bit count of milliseconds.
        // Further than a queue's TTL can hold is waited in hops (`subscribe::due`).
        caps.max_schedule_ahead = None;
        // Queues keep no history: a new group's queue receives what is published after it is
        // bound.
        caps.replays_history = false;
        // Durable exchanges and queues, persistent messages.
        caps.survives_broker_restart = true;
        caps.remote = true;
        // basic.ack and basic.nack have no reply: an ack written just before the broker closes
        // the channel is ignored, and the broker redelivers.
        caps.confirms_settlement = false;
        caps
    }

    fn scheduler(self: Arc<Self>) -> Option<Arc<dyn Scheduler>> {
        Some(self)
    }
}
