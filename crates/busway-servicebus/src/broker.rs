//! [`ServiceBusBroker`]: the publisher and subscriber sides over one connection.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex as SyncMutex};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use busway_core::{
    Error, Message, Ordering, Publisher, Result, SubscribeOptions, Subscriber, Subscription,
};
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use crate::client::{Connector, SharedClient};
use crate::codec;
use crate::config::ServiceBusConfig;
use crate::receive::{self, Context};
use crate::rules;
use crate::senders::Senders;

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
    pub(crate) client: SharedClient,
    pub(crate) senders: Arc<Senders>,
    /// Groups this broker has seen, for listing dead-letter queues (Service Bus's AMQP interface
    /// cannot enumerate subscriptions).
    pub(crate) groups: SyncMutex<BTreeSet<(String, String)>>,
    /// Subscriptions whose routing rules are known to be in place.
    routed: SyncMutex<HashSet<(String, String)>>,
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
        let client: SharedClient = Arc::new(Mutex::new(connector.connect().await?));
        let senders = Arc::new(Senders::new(client.clone(), config.senders_per_topic));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                connector,
                client,
                senders,
                groups: SyncMutex::new(BTreeSet::new()),
                routed: SyncMutex::new(HashSet::new()),
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

    pub(crate) fn is_queue(&self, topic: &str) -> bool {
        self.inner.config.queues.iter().any(|q| q == topic)
    }

    /// The entity receivers of `group` read.
    pub(crate) fn receive_entity(&self, topic: &str, group: &str) -> String {
        if self.is_queue(topic) {
            topic.to_owned()
        } else {
            format!("{topic}/Subscriptions/{group}")
        }
    }

    pub(crate) fn remember(&self, topic: &str, group: &str) {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.to_owned(), group.to_owned()));
    }

    /// Makes sure copies addressed to `group` reach it alone; false when they cannot.
    pub(crate) async fn ensure_routing(&self, topic: &str, group: &str) -> bool {
        if self.is_queue(topic) {
            return true;
        }
        let key = (topic.to_owned(), group.to_owned());
        let known = |routed: &SyncMutex<HashSet<_>>| {
            routed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key)
        };
        if known(&self.inner.routed) {
            return true;
        }
        if !self.inner.config.manage_rules {
            return false;
        }
        match rules::ensure(&self.inner.client, topic, group).await {
            Ok(()) => {
                self.inner
                    .routed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key);
                true
            }
            Err(e) => {
                tracing::warn!(
                    error = %e, topic, group,
                    "could not install busway's routing rules; delayed redeliveries will hold the lock instead of scheduling a copy"
                );
                false
            }
        }
    }

    fn check_names(topic: &str, group: Option<&str>) -> Result<()> {
        if topic.is_empty() {
            return Err(Error::config("topic", "must not be empty"));
        }
        if group.is_some_and(str::is_empty) {
            return Err(Error::config("group", "must not be empty"));
        }
        Ok(())
    }

    fn encode(&self, message: &Message) -> Result<azservicebus::ServiceBusMessage> {
        message.validate()?;
        let sb = codec::encode(message);
        codec::check_size(&sb, self.inner.config.max_message_bytes)?;
        Ok(sb)
    }
}

#[async_trait]
impl Publisher for ServiceBusBroker {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        Self::check_names(topic, None)?;
        let sb = self.encode(&message)?;
        self.inner.senders.send(topic, sb).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        Self::check_names(topic, None)?;
        // Refuse the whole batch before anything is sent if one message is bad.
        let encoded = messages
            .iter()
            .map(|m| self.encode(m))
            .collect::<Result<Vec<_>>>()?;
        self.inner
            .senders
            .send_batched(topic, encoded, self.inner.config.max_message_bytes)
            .await
    }

    async fn schedule(
        &self,
        topic: &str,
        message: Message,
        deliver_at: DateTime<Utc>,
    ) -> Result<()> {
        Self::check_names(topic, None)?;
        let sb = self.encode(&message)?;
        self.inner
            .senders
            .schedule(topic, sb, deliver_at)
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
        Self::check_names(topic, Some(group))?;
        let queue = self.is_queue(topic);
        let routed = self.ensure_routing(topic, group).await;
        self.remember(topic, group);
        let config = &self.inner.config;
        let ctx = Arc::new(Context {
            topic: topic.to_owned(),
            group: group.to_owned(),
            send_entity: topic.to_owned(),
            receive_entity: self.receive_entity(topic, group),
            routed,
            senders: self.inner.senders.clone(),
            lock_renewal: config.lock_renewal,
            max_message_bytes: config.max_message_bytes,
        });
        match options.ordering {
            Ordering::Unordered => receive::plain(&self.inner.client, ctx, options.prefetch).await,
            Ordering::PerKey => {
                receive::sessions(
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
