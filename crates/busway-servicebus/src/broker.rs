//! [`ServiceBusBroker`]: the publisher and subscriber sides over one connection.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex as SyncMutex, RwLock};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use busway_core::preflight::{SizeLimit, check_name};
use busway_core::{
    Broker, Capabilities, Message, Ordering, Publisher, Result, Scheduler, SubscribeOptions,
    Subscriber, Subscription,
};
use chrono::{DateTime, Utc};

use crate::codec;
use crate::config::ServiceBusConfig;
use crate::connection::{Connection, Connector};
use crate::publish::Senders;
use crate::subscribe::{self, Context};
use crate::topology;

/// busway's Service Bus adapter: [`Publisher`], [`Subscriber`] and
/// [`DeadLetters`](busway_core::DeadLetters) on one AMQP connection.
///
/// Cheap to clone; clones share the connection and its links.
///
/// ```no_run
/// use busway_core::{Message, Publisher};
/// use busway_servicebus::{ServiceBusBroker, ServiceBusConfig};
///
/// # async fn demo() -> busway_core::Result<()> {
/// let config = ServiceBusConfig::from_connection_string(
///     "Endpoint=sb://my-namespace.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=...",
/// );
/// let broker = ServiceBusBroker::connect(config).await?;
/// broker
///     .publish("orders", Message::builder("/shop", "order.placed").data("42").build()?)
///     .await?;
/// broker.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceBusBroker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ServiceBusConfig,
    pub(crate) connector: Connector,
    pub(crate) connection: Arc<Connection>,
    pub(crate) senders: Arc<Senders>,
    /// The one publish-side check (names, CloudEvents rules, size with metadata headroom).
    limit: SizeLimit,
    /// Groups this broker has seen, by busway topic, for listing dead-letter queues (Service
    /// Bus's AMQP interface cannot enumerate subscriptions).
    pub(crate) groups: SyncMutex<BTreeSet<(String, String)>>,
    /// Subscriptions (entity, group) whose routing rules are known to be in place.
    routed: SyncMutex<HashSet<(String, String)>>,
    /// Service Bus entity of each busway topic whose name differs.
    entities: RwLock<HashMap<String, String>>,
}

impl fmt::Debug for ServiceBusBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBusBroker")
            .field("endpoint", &self.inner.connector.endpoint())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ServiceBusBroker {
    /// Connects with a connection string or a shared access key from `config`.
    pub async fn connect(config: ServiceBusConfig) -> Result<Self> {
        Self::open(config, None).await
    }

    /// Connects to `config.endpoint` with an Entra ID token credential, e.g.
    /// `azure_identity::DefaultAzureCredential` (azure_identity 0.25, the line azservicebus
    /// 0.25 builds on).
    ///
    /// ```no_run
    /// # async fn demo(credential: std::sync::Arc<dyn busway_servicebus::TokenCredential>) -> busway_core::Result<()> {
    /// use busway_servicebus::{ServiceBusBroker, ServiceBusConfig};
    ///
    /// let config = ServiceBusConfig {
    ///     endpoint: Some("my-namespace.servicebus.windows.net".into()),
    ///     ..ServiceBusConfig::default()
    /// };
    /// let broker = ServiceBusBroker::connect_with_credential(config, credential).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_credential(
        config: ServiceBusConfig,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self> {
        Self::open(config, Some(credential)).await
    }

    async fn open(
        config: ServiceBusConfig,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Self> {
        let connector = Connector::new(&config, credential)?;
        let limit = config.size_limit()?;
        let connection = Arc::new(Connection::connect(connector.clone()).await?);
        let senders = Arc::new(Senders::new(
            connection.clone(),
            config.senders_per_topic,
            config.max_retries,
        ));
        let entities = config
            .entities
            .iter()
            .map(|(t, e)| (t.clone(), e.clone()))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                connector,
                connection,
                senders,
                limit,
                groups: SyncMutex::new(BTreeSet::new()),
                routed: SyncMutex::new(HashSet::new()),
                entities: RwLock::new(entities),
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &ServiceBusConfig {
        &self.inner.config
    }

    /// Closes the senders. Subscriptions close on their own when dropped or closed; the
    /// connection closes when the last clone of the broker and of its subscriptions is gone.
    pub async fn close(&self) {
        self.inner.senders.close().await;
    }

    /// Routes busway topic `topic` to the Service Bus topic or queue `entity` from now on, like
    /// an entry of [`ServiceBusConfig::entities`]: for names known only at run time (e.g.
    /// allocated by a deployment tool). Subscriptions and senders opened before keep their
    /// entity.
    pub fn map_topic(&self, topic: impl Into<String>, entity: impl Into<String>) {
        self.inner
            .entities
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.into(), entity.into());
    }

    /// The Service Bus entity of busway topic `topic`.
    pub(crate) fn entity(&self, topic: &str) -> String {
        self.inner
            .entities
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .cloned()
            .unwrap_or_else(|| topic.to_owned())
    }

    /// Whether busway topic `topic` is a queue (listed by its own or its entity's name).
    pub(crate) fn is_queue(&self, topic: &str) -> bool {
        let entity = self.entity(topic);
        self.inner
            .config
            .queues
            .iter()
            .any(|q| q == topic || *q == entity)
    }

    /// The entity receivers of `group` read.
    pub(crate) fn receive_entity(&self, topic: &str, group: &str) -> String {
        let entity = self.entity(topic);
        if self.is_queue(topic) {
            entity
        } else {
            format!("{entity}/Subscriptions/{group}")
        }
    }

    pub(crate) fn remember(&self, topic: &str, group: &str) {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.to_owned(), group.to_owned()));
    }

    /// Makes sure copies addressed to `group` reach it alone (see [`rules`]): installs or
    /// checks the routing rules, or fails with an error naming `servicebus.manage_rules`.
    pub(crate) async fn ensure_routing(&self, topic: &str, group: &str) -> Result<()> {
        if self.is_queue(topic) {
            return Ok(());
        }
        let key = (self.entity(topic), group.to_owned());
        let known = self
            .inner
            .routed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key);
        if known {
            return Ok(());
        }
        topology::ensure(
            &self.inner.connection,
            &key.0,
            group,
            self.inner.config.manage_rules,
        )
        .await?;
        self.inner
            .routed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        Ok(())
    }

    /// Encodes `message` and runs the one publish check on it.
    fn encode(&self, topic: &str, message: &Message) -> Result<azservicebus::ServiceBusMessage> {
        let sb = codec::encode(message);
        self.inner
            .limit
            .check(topic, message, codec::encoded_size(&sb))?;
        Ok(sb)
    }
}

#[async_trait]
impl Publisher for ServiceBusBroker {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        let sb = self.encode(topic, &message)?;
        self.inner.senders.send(&self.entity(topic), sb).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        check_name("topic", topic)?;
        // Refuse the whole batch before anything is sent if one message is bad.
        let encoded = messages
            .iter()
            .map(|m| self.encode(topic, m))
            .collect::<Result<Vec<_>>>()?;
        self.inner
            .senders
            .send_batched(&self.entity(topic), encoded, self.inner.limit.broker())
            .await
    }
}

#[async_trait]
impl Scheduler for ServiceBusBroker {
    async fn schedule(
        &self,
        topic: &str,
        message: Message,
        deliver_at: DateTime<Utc>,
    ) -> Result<()> {
        let sb = self.encode(topic, &message)?;
        self.inner
            .senders
            .schedule(&self.entity(topic), sb, deliver_at)
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Subscriber for ServiceBusBroker {
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        check_name("topic", topic)?;
        check_name("group", group)?;
        self.capabilities().check_subscribe(&options)?;
        let queue = self.is_queue(topic);
        // Refused here, at startup, rather than by sending a copy later that would reach other
        // groups (or by holding a lock in process, which a crash loses).
        self.ensure_routing(topic, group).await?;
        self.remember(topic, group);
        let config = &self.inner.config;
        let ctx = Arc::new(Context {
            topic: topic.to_owned(),
            group: group.to_owned(),
            send_entity: self.entity(topic),
            receive_entity: self.receive_entity(topic, group),
            queue,
            senders: self.inner.senders.clone(),
            lock_renewal: config.lock_renewal,
            max_message_bytes: self.inner.limit.broker(),
        });
        match options.ordering {
            Ordering::Unordered => {
                subscribe::plain(self.inner.connection.clone(), ctx, options.prefetch).await
            }
            Ordering::PerKey => {
                subscribe::sessions(
                    &self.inner.connector,
                    ctx,
                    options.prefetch,
                    config.max_sessions,
                    config.session_idle_timeout,
                    queue,
                )
                .await
            }
        }
    }
}

impl Broker for ServiceBusBroker {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::new("Service Bus");
        // Sessions, on subscriptions that require them.
        caps.per_key_ordering = true;
        caps.scheduling = true;
        // A subscription holds what arrived since it was created; a topic keeps no log to
        // replay.
        caps.replays_history = false;
        caps.survives_broker_restart = true;
        caps.remote = true;
        // Peek-lock receivers settle in mode `second`, so the broker does answer every
        // disposition, but the client (fe2o3-amqp under azservicebus) returns from `complete`
        // once the disposition is queued for the connection, without waiting for that answer:
        // a complete written as the connection drops can be lost, and the message comes back
        // when its lock is released, its delivery counted.
        caps.confirms_settlement = false;
        caps
    }

    fn scheduler(self: Arc<Self>) -> Option<Arc<dyn Scheduler>> {
        Some(self)
    }
}
