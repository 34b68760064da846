//! Topics, their groups, and the publisher and subscriber sides.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use busway_core::{
    Error, Message, Publisher, Result, StartPosition, SubscribeOptions, Subscriber, Subscription,
};
use chrono::{DateTime, Utc};

use crate::config::MemoryConfig;
use crate::queue::{Entry, GroupQueue};

#[derive(Default)]
struct Topic {
    groups: HashMap<String, Arc<GroupQueue>>,
    /// The newest messages, for groups that start at the earliest position.
    retained: VecDeque<Message>,
}

pub(crate) struct Inner {
    config: MemoryConfig,
    topics: Mutex<HashMap<String, Topic>>,
}

/// The in-process broker. Cheap to clone; clones share the same topics.
#[derive(Clone)]
pub struct MemoryBroker {
    pub(crate) inner: Arc<Inner>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// A broker with default limits.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// A broker with the given limits.
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                topics: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &MemoryConfig {
        &self.inner.config
    }

    /// Messages waiting in a group (ready or delayed, not in flight); 0 for an unknown group.
    pub fn depth(&self, topic: &str, group: &str) -> usize {
        self.group(topic, group).map_or(0, |q| q.depth())
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<String, Topic>> {
        self.inner.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn group(&self, topic: &str, group: &str) -> Option<Arc<GroupQueue>> {
        self.topics().get(topic)?.groups.get(group).cloned()
    }

    pub(crate) fn all_groups(&self) -> Vec<Arc<GroupQueue>> {
        self.topics()
            .values()
            .flat_map(|t| t.groups.values().cloned())
            .collect()
    }

    fn check(&self, topic: &str, message: &Message) -> Result<()> {
        if topic.is_empty() {
            return Err(Error::config("topic", "must not be empty"));
        }
        message.validate()?;
        let size = message.encoded_len();
        let limit = self.inner.config.max_message_bytes;
        if size > limit {
            return Err(Error::TooLarge { size, limit });
        }
        Ok(())
    }

    /// Takes a slot in `queue`, waiting for room up to the publish timeout.
    pub(crate) async fn reserve(
        &self,
        queue: &GroupQueue,
    ) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let timeout = self.inner.config.publish_timeout;
        match tokio::time::timeout(timeout, queue.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::Closed("group queue closed".into())),
            Err(_) => Err(Error::Timeout(format!(
                "group {}/{} stayed full for {timeout:?}",
                queue.topic, queue.group
            ))),
        }
    }

    async fn deliver(&self, topic: &str, message: Message) -> Result<()> {
        let groups: Vec<Arc<GroupQueue>> = {
            let mut topics = self.topics();
            let t = topics.entry(topic.to_owned()).or_default();
            t.groups.values().cloned().collect()
        };
        // Reserve room in every group first, so a full group delays the publish rather than
        // delivering to some groups only.
        let mut slots = Vec::with_capacity(groups.len());
        for queue in &groups {
            slots.push(self.reserve(queue).await?);
        }
        let retention = self.inner.config.retention;
        if retention > 0 {
            let mut topics = self.topics();
            let retained = &mut topics.entry(topic.to_owned()).or_default().retained;
            if retained.len() >= retention {
                retained.pop_front();
            }
            retained.push_back(message.clone());
        }
        for (queue, slot) in groups.iter().zip(slots) {
            queue.push(Entry {
                message: message.clone(),
                deliveries: 0,
                first_failure: None,
                _slot: slot,
            });
        }
        Ok(())
    }

    fn join(
        &self,
        topic: &str,
        group: &str,
        options: &SubscribeOptions,
    ) -> (Arc<GroupQueue>, Vec<Message>) {
        let config = &self.inner.config;
        let mut topics = self.topics();
        let t = topics.entry(topic.to_owned()).or_default();
        if let Some(queue) = t.groups.get(group) {
            return (queue.clone(), Vec::new());
        }
        let queue = GroupQueue::new(
            topic,
            group,
            options.ordering == busway_core::Ordering::PerKey,
            config.group_capacity,
            config.dead_letter_capacity,
        );
        t.groups.insert(group.to_owned(), queue.clone());
        let backlog = match options.start {
            StartPosition::Earliest => t.retained.iter().cloned().collect(),
            StartPosition::Latest => Vec::new(),
        };
        (queue, backlog)
    }
}

#[async_trait]
impl Publisher for MemoryBroker {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.check(topic, &message)?;
        self.deliver(topic, message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        // Refuse the whole batch before anything is delivered if one message is bad.
        for message in &messages {
            self.check(topic, message)?;
        }
        for message in messages {
            self.deliver(topic, message).await?;
        }
        Ok(())
    }

    async fn schedule(
        &self,
        topic: &str,
        message: Message,
        deliver_at: DateTime<Utc>,
    ) -> Result<()> {
        self.check(topic, &message)?;
        let wait = (deliver_at - Utc::now()).to_std().unwrap_or_default();
        let broker = self.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Err(e) = broker.deliver(&topic, message).await {
                tracing::error!(error = %e, topic, "scheduled message could not be delivered");
            }
        });
        Ok(())
    }
}

#[async_trait]
impl Subscriber for MemoryBroker {
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        if topic.is_empty() {
            return Err(Error::config("topic", "must not be empty"));
        }
        if group.is_empty() {
            return Err(Error::config("group", "must not be empty"));
        }
        let (queue, backlog) = self.join(topic, group, &options);
        for message in backlog {
            let slot = self.reserve(&queue).await?;
            queue.push(Entry {
                message,
                deliveries: 0,
                first_failure: None,
                _slot: slot,
            });
        }
        Ok(Box::new(queue.subscribe()))
    }
}
