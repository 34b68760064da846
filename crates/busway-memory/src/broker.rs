//! Topics, their groups, and the publisher and subscriber sides.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use busway_core::{
    Broker, Capabilities, Error, Message, Publisher, Result, Scheduler, StartPosition,
    SubscribeOptions, Subscriber, Subscription,
};
use chrono::{DateTime, Utc};

use busway_core::preflight::SizeLimit;

use crate::config::MemoryConfig;
use crate::queue::{Entry, Faults, GroupQueue};

#[derive(Default)]
struct Topic {
    groups: HashMap<String, Arc<GroupQueue>>,
    /// The newest messages, for groups that start at the earliest position.
    retained: VecDeque<Message>,
}

pub(crate) struct Inner {
    config: MemoryConfig,
    limit: SizeLimit,
    topics: Mutex<HashMap<String, Topic>>,
    faults: Arc<Faults>,
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
        let config = MemoryConfig::default();
        let limit = SizeLimit::new("memory.max_message_bytes", config.max_message_bytes)
            .unwrap_or_else(|_| unreachable!("the default limit leaves room for messages"));
        Self::assemble(config, limit)
    }

    /// A broker with the given limits; a limit that cannot work names its setting.
    pub fn with_config(config: MemoryConfig) -> Result<Self> {
        config.validate()?;
        let limit = config.size_limit()?;
        Ok(Self::assemble(config, limit))
    }

    fn assemble(config: MemoryConfig, limit: SizeLimit) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                limit,
                topics: Mutex::new(HashMap::new()),
                faults: Arc::default(),
            }),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &MemoryConfig {
        &self.inner.config
    }

    /// Fault injection for tests of failure handling: while `refuse` is on, dead-lettering a
    /// message of `group` on `topic` fails (the dead-letter queue "refuses" it), as a broker that
    /// rejects a dead-letter copy would. The group need not exist yet.
    ///
    /// ```
    /// # let broker = busway_memory::MemoryBroker::new();
    /// broker.refuse_dead_letters("orders", "billing", true);
    /// // ... prove that your service neither loses the message nor stops ...
    /// broker.refuse_dead_letters("orders", "billing", false);
    /// ```
    pub fn refuse_dead_letters(&self, topic: &str, group: &str, refuse: bool) {
        let mut refused = self
            .inner
            .faults
            .refused_dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let key = (topic.to_owned(), group.to_owned());
        if refuse {
            refused.insert(key);
        } else {
            refused.remove(&key);
        }
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
        self.inner
            .limit
            .check(topic, message, message.encoded_len())
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

    /// Reserves room in every group of `topic`, so a full group delays the publish rather than
    /// delivering to some groups only; `None` when no group has joined.
    async fn reserve_all(
        &self,
        topic: &str,
    ) -> Result<Option<Vec<(Arc<GroupQueue>, tokio::sync::OwnedSemaphorePermit)>>> {
        let groups: Vec<Arc<GroupQueue>> = {
            let mut topics = self.topics();
            let t = topics.entry(topic.to_owned()).or_default();
            t.groups.values().cloned().collect()
        };
        if groups.is_empty() {
            return Ok(None);
        }
        let mut reserved = Vec::with_capacity(groups.len());
        for queue in groups {
            let slot = self.reserve(&queue).await?;
            reserved.push((queue, slot));
        }
        Ok(Some(reserved))
    }

    async fn deliver(&self, topic: &str, message: Message) -> Result<()> {
        let reserved = self.reserve_all(topic).await?.unwrap_or_default();
        let retention = self.inner.config.retention;
        if retention > 0 {
            let mut topics = self.topics();
            let retained = &mut topics.entry(topic.to_owned()).or_default().retained;
            if retained.len() >= retention {
                retained.pop_front();
            }
            retained.push_back(message.clone());
        }
        for (queue, slot) in reserved {
            queue.push(Entry::new(message.clone(), slot));
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
            self.inner.faults.clone(),
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
}

#[async_trait]
impl Scheduler for MemoryBroker {
    /// Holds the message in every group's queue until it is due: it takes a slot of each group
    /// now (a full group makes this wait, then fail, as a publish would), so it is never
    /// dropped later. A topic no group has joined has nobody to deliver to: `Unroutable`.
    async fn schedule(
        &self,
        topic: &str,
        message: Message,
        deliver_at: DateTime<Utc>,
    ) -> Result<()> {
        self.check(topic, &message)?;
        let Some(reserved) = self.reserve_all(topic).await? else {
            return Err(Error::Unroutable(format!(
                "no group has joined topic {topic:?}: nothing would receive the scheduled message"
            )));
        };
        let wait = (deliver_at - Utc::now()).to_std().unwrap_or_default();
        let due = tokio::time::Instant::now() + wait;
        for (queue, slot) in reserved {
            queue.delay(Entry::new(message.clone(), slot), due);
        }
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
        busway_core::preflight::check_name("topic", topic)?;
        busway_core::preflight::check_name("group", group)?;
        self.capabilities().check_subscribe(&options)?;
        let (queue, backlog) = self.join(topic, group, &options);
        for message in backlog {
            let slot = self.reserve(&queue).await?;
            queue.push(Entry::new(message, slot));
        }
        Ok(Box::new(queue.subscribe()))
    }
}

impl Broker for MemoryBroker {
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::new("the in-process broker");
        caps.per_key_ordering = true;
        caps.scheduling = true;
        // A new group starts with what the topic retains.
        caps.replays_history = true;
        // Everything lives in this process.
        caps.survives_broker_restart = false;
        caps.remote = false;
        // Settling is a call into the broker's own state.
        caps.confirms_settlement = true;
        caps
    }

    fn scheduler(self: Arc<Self>) -> Option<Arc<dyn Scheduler>> {
        Some(self)
    }
}
