//! A received message and the one-shot handle that settles it with the broker.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::dead_letter::DeadLetterMetadata;
use crate::error::Result;
use crate::message::Message;

/// How a delivery ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Processed: remove it.
    Ack,
    /// Give it back to be delivered again, after `delay` (zero: at once), with its attempt
    /// count increased.
    Redeliver {
        /// How long the broker holds it back before delivering it again.
        delay: Duration,
        /// When the first delivery of this message failed; carried to the next attempt.
        first_failure: DateTime<Utc>,
    },
    /// Move it, unchanged, to the group's dead-letter queue with this metadata.
    DeadLetter(Box<DeadLetterMetadata>),
}

/// The adapter side of a delivery: settles it with the broker.
///
/// Adapters implement this; applications settle through [`Delivery`], whose methods take the
/// delivery by value, so settling twice cannot compile there. The runtime may call `settle`
/// again after an `Err` (the same settlement after a pause, or another one as a fallback), and
/// never after an `Ok`. The contract:
///
/// - `Ok`: the broker took the settlement; the handle is spent, and dropping it does nothing.
/// - `Err`: the delivery is still the handle's (an adapter that lost it, e.g. with its
///   connection, says so in the error, and the broker redelivers it anyway). Nothing may be
///   lost: a copy sent before the failure may at most duplicate the message.
/// - Dropped unsettled (task aborted, settlement given up): the message goes back to the broker
///   for another delivery whose attempt number counts this one, as after a consumer crash.
#[async_trait]
pub trait Settle: Send + 'static {
    /// Performs the settlement.
    async fn settle(&mut self, settlement: &Settlement) -> Result<()>;
}

/// Where a delivery came from and how often it has been tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// The topic it was published to.
    pub topic: String,
    /// The consumer group receiving it.
    pub group: String,
    /// 1 for the first delivery; the broker's delivery count where it keeps one.
    pub attempt: u32,
    /// When an earlier delivery of this message first failed, if one did.
    pub first_failure: Option<DateTime<Utc>>,
    /// Set by adapters whose broker promises an order the runtime must keep (e.g. a Kafka
    /// partition): deliveries with the same ordering key are handled one at a time, in arrival
    /// order, whatever the group's [`Ordering`](crate::Ordering). When unset and the group asks
    /// for per-key ordering, the message's partition key is used.
    pub ordering_key: Option<String>,
}

impl DeliveryInfo {
    /// Info for a first, decodable delivery.
    pub fn new(topic: impl Into<String>, group: impl Into<String>, attempt: u32) -> Self {
        Self {
            topic: topic.into(),
            group: group.into(),
            attempt,
            first_failure: None,
            ordering_key: None,
        }
    }
}

/// A message received as a member of a group, with its settlement handle.
///
/// Every settling method takes `self`, so a delivery is settled at most once by construction.
///
/// ```
/// # async fn handle(delivery: busway_core::Delivery) -> busway_core::Result<()> {
/// if delivery.message().data().is_empty() {
///     delivery.redeliver(std::time::Duration::from_secs(5)).await
/// } else {
///     delivery.ack().await
/// }
/// # }
/// ```
pub struct Delivery {
    message: Message,
    info: DeliveryInfo,
    settle: Box<dyn Settle>,
    /// Why the broker message is not a CloudEvent, for a [`Delivery::undecodable`].
    decode_error: Option<String>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("info", &self.info)
            .field("decode_error", &self.decode_error)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Assembles a delivery; used by adapters.
    pub fn new(message: Message, info: DeliveryInfo, settle: Box<dyn Settle>) -> Self {
        Self {
            message,
            info,
            settle,
            decode_error: None,
        }
    }
    /// A delivery of a broker message that could not be decoded into a CloudEvent; used by
    /// adapters. Its message is [`Message::undecodable`] (`raw` as data, the broker's message id
    /// when it has one); `reason` says what is wrong with it. The consumer runtime never hands
    /// it to a handler: it dead-letters it at once with reason `undecodable`, and the adapter
    /// writes the original broker message, bytes unchanged.
    ///
    /// ```
    /// # use busway_core::{Delivery, DeliveryInfo, Settle, Settlement, Result};
    /// # struct Noop;
    /// # #[async_trait::async_trait]
    /// # impl Settle for Noop { async fn settle(&mut self, _: &Settlement) -> Result<()> { Ok(()) } }
    /// let d = Delivery::undecodable(
    ///     bytes::Bytes::from_static(b"not json"),
    ///     None,
    ///     "expected a JSON object",
    ///     DeliveryInfo::new("orders", "billing", 1),
    ///     Box::new(Noop),
    /// );
    /// assert_eq!(d.decode_error(), Some("expected a JSON object"));
    /// assert_eq!(d.message().data().as_ref(), b"not json");
    /// ```
    pub fn undecodable(
        raw: Bytes,
        broker_id: Option<&str>,
        reason: impl Into<String>,
        info: DeliveryInfo,
        settle: Box<dyn Settle>,
    ) -> Self {
        Self {
            message: Message::undecodable(raw, broker_id),
            info,
            settle,
            decode_error: Some(reason.into()),
        }
    }
    /// Why the broker message could not be decoded, for a [`Delivery::undecodable`]; `None`
    /// for a CloudEvent.
    pub fn decode_error(&self) -> Option<&str> {
        self.decode_error.as_deref()
    }
    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }
    /// Where it came from and the attempt number.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }
    /// 1 for the first delivery.
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }
    /// Settles with an explicit [`Settlement`]. On error the delivery is released to the broker,
    /// which delivers it again.
    pub async fn settle(mut self, settlement: Settlement) -> Result<()> {
        self.settle.settle(&settlement).await
    }
    /// Acknowledges: the message is done.
    pub async fn ack(self) -> Result<()> {
        self.settle(Settlement::Ack).await
    }
    /// Gives the message back to be delivered again after `delay`.
    pub async fn redeliver(self, delay: Duration) -> Result<()> {
        let first_failure = self.info.first_failure.unwrap_or_else(Utc::now);
        self.settle(Settlement::Redeliver {
            delay,
            first_failure,
        })
        .await
    }
    /// Moves the message to the dead-letter queue with `metadata`.
    pub async fn dead_letter(self, metadata: DeadLetterMetadata) -> Result<()> {
        self.settle(Settlement::DeadLetter(Box::new(metadata)))
            .await
    }
    /// Splits into parts, for runtimes that hand the message to a handler and settle later
    /// (read [`decode_error`](Self::decode_error) first: the parts do not carry it).
    pub fn into_parts(self) -> (Message, DeliveryInfo, Box<dyn Settle>) {
        (self.message, self.info, self.settle)
    }
}
