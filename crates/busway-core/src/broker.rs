//! The two sides of a broker as seen by applications: [`Publisher`] and [`Subscriber`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::message::Message;

/// Sends messages to topics.
///
/// Object safe: applications hold an `Arc<dyn Publisher>` and do not change when the broker does.
/// A publish returns once the broker has taken responsibility for the message (confirm, delivery
/// report, accepted disposition); an error means it may not have.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes one message to `topic`.
    async fn publish(&self, topic: &str, message: Message) -> Result<()>;

    /// Publishes several messages, returning when the broker has taken every one of them.
    ///
    /// Adapters pipeline the batch (many in flight at once). On error, some messages may have
    /// been published; publish them again and let consumer-side deduplication absorb repeats.
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        for message in messages {
            self.publish(topic, message).await?;
        }
        Ok(())
    }

    /// Publishes `message` so that it is delivered no earlier than `deliver_at`.
    async fn schedule(
        &self,
        topic: &str,
        message: Message,
        deliver_at: DateTime<Utc>,
    ) -> Result<()> {
        let _ = (topic, message, deliver_at);
        Err(Error::Unsupported("scheduled delivery".into()))
    }
}

/// Where a new group starts reading a topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// Only messages published after the group was created.
    #[default]
    Latest,
    /// Every message the broker still retains for the topic.
    Earliest,
}

/// Whether a group needs messages with the same partition key handled in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Any order; maximum parallelism.
    #[default]
    Unordered,
    /// Messages with the same partition key are delivered and handled one at a time, in publish
    /// order; different keys in parallel.
    PerKey,
}

/// How to subscribe.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Where a group that does not exist yet starts.
    pub start: StartPosition,
    /// How many unsettled deliveries the broker may push ahead of the handler.
    pub prefetch: usize,
    /// Ordering the group needs.
    pub ordering: Ordering,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            start: StartPosition::Latest,
            prefetch: 32,
            ordering: Ordering::Unordered,
        }
    }
}

impl SubscribeOptions {
    /// Sets the start position for a new group.
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }
    /// Sets the prefetch (at least 1).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }
    /// Sets the ordering.
    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }
}

/// Receives messages from topics as a member of a group.
///
/// Every group receives every message of the topic; within a group each message goes to one
/// member.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Joins `group` on `topic`, creating the group if needed.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>>;
}

/// A stream of deliveries for one member of a group.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the subscription is closed.
    ///
    /// An `Err` reports a problem the adapter could not hide (e.g. the connection dropped and is
    /// being re-established); the stream goes on after it.
    async fn next(&mut self) -> Option<Result<Delivery>>;

    /// Stops fetching and gives back anything prefetched but not yet handed out. Deliveries
    /// already handed out stay valid and must still be settled.
    async fn close(&mut self) -> Result<()>;
}
