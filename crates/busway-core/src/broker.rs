//! A broker as seen by applications: [`Publisher`] and [`Subscriber`], [`Scheduler`] where the
//! broker can schedule, and [`Broker`], all of it behind one handle, with its [`Capabilities`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::dead_letter::DeadLetters;
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
}

/// Publishes messages for delivery at a later time: implemented by the brokers that can, so
/// that scheduling on one that cannot does not compile (or, through
/// [`Broker::scheduler`], is known when connecting rather than at the first message).
///
/// ```
/// # async fn demo(broker: &impl busway_core::Scheduler) -> busway_core::Result<()> {
/// use busway_core::Message;
/// let reminder = Message::builder("/shop", "cart.reminder").data("42").build()?;
/// let at = chrono::Utc::now() + chrono::Duration::hours(1);
/// broker.schedule("carts", reminder, at).await
/// # }
/// ```
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Publishes `message` so that it is delivered no earlier than `deliver_at` (at once when
    /// that is past). Returns once the broker holds it, like [`Publisher::publish`]. A broker
    /// that limits how far ahead it schedules ([`Capabilities::max_schedule_ahead`]) refuses a
    /// later time with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
    async fn schedule(
        &self,
        topic: &str,
        message: Message,
        deliver_at: DateTime<Utc>,
    ) -> Result<()>;
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

/// A connected broker: publisher, subscriber and dead-letter access behind one handle, with
/// what it can do. Adapters implement it on their broker type; the `busway` facade's `Bus`
/// holds one `Arc<dyn Broker>`.
pub trait Broker: Publisher + Subscriber + DeadLetters + 'static {
    /// What this broker can do.
    fn capabilities(&self) -> Capabilities;

    /// The broker as a [`Scheduler`], when it can schedule; `None` otherwise, so that an
    /// application that needs scheduling can refuse to start on a broker that cannot.
    fn scheduler(self: Arc<Self>) -> Option<Arc<dyn Scheduler>>;
}

/// What a broker can do, as its adapter reports it ([`Broker::capabilities`]).
///
/// Settings a broker cannot honour fail when subscribing, naming the setting
/// ([`Capabilities::check_subscribe`]), rather than being ignored; the conformance suite skips
/// what a broker cannot do, with the reason.
///
/// ```
/// use busway_core::{Capabilities, StartPosition, SubscribeOptions};
///
/// let mut caps = Capabilities::new("example");
/// caps.replays_history = false;
/// let err = caps
///     .check_subscribe(&SubscribeOptions::default().start(StartPosition::Earliest))
///     .unwrap_err();
/// assert!(err.to_string().contains("start_position"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The broker's name, for error messages.
    pub broker: &'static str,
    /// Groups can ask for per-key ordering ([`Ordering::PerKey`]).
    pub per_key_ordering: bool,
    /// The adapter implements [`Scheduler`] ([`Broker::scheduler`] returns it).
    pub scheduling: bool,
    /// How far ahead a message can be scheduled; `None` when there is no limit.
    pub max_schedule_ahead: Option<Duration>,
    /// A new group can start with the messages the broker retains
    /// ([`StartPosition::Earliest`]); without it, only [`StartPosition::Latest`] is accepted.
    pub replays_history: bool,
    /// Messages accepted before the broker restarts are delivered after it (durable storage).
    pub survives_broker_restart: bool,
    /// The broker runs in another process, reached over connections that can drop (and that
    /// the adapter re-establishes); false for an in-process broker.
    pub remote: bool,
    /// The broker answers a settlement, so an `Ok` from [`Settle::settle`](crate::Settle)
    /// means the broker recorded it. Without it (AMQP 0-9-1's `basic.ack` has no reply; Kafka
    /// commits offsets later), `Ok` means the settlement was sent: if the connection is lost
    /// at that moment the message can still come back, once more, with its attempt counted
    /// (at least once, never lost).
    pub confirms_settlement: bool,
}

impl Capabilities {
    /// Capabilities of a broker named `broker` that can do none of the optional things; an
    /// adapter switches on what its broker can do.
    pub fn new(broker: &'static str) -> Self {
        Self {
            broker,
            per_key_ordering: false,
            scheduling: false,
            max_schedule_ahead: None,
            replays_history: false,
            survives_broker_restart: false,
            remote: false,
            confirms_settlement: false,
        }
    }

    /// Refuses subscribe options this broker cannot honour, naming the setting
    /// (`start_position`, `ordering`), so a consumer fails when it starts instead of behaving
    /// differently from what was asked.
    pub fn check_subscribe(&self, options: &SubscribeOptions) -> Result<()> {
        if options.start == StartPosition::Earliest && !self.replays_history {
            return Err(Error::config(
                "start_position",
                format!(
                    "`earliest` cannot be honoured: {} keeps no history for a new group to \
                     replay (a new group starts with what is published after it exists); use \
                     `latest`",
                    self.broker
                ),
            ));
        }
        if options.ordering == Ordering::PerKey && !self.per_key_ordering {
            return Err(Error::config(
                "ordering",
                format!("{} cannot keep per-key order for a group", self.broker),
            ));
        }
        Ok(())
    }
}
