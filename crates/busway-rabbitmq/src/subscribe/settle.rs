//! Settling one RabbitMQ delivery: ack, redelivery through a wait queue, dead letter.
//!
//! Redelivery and dead-lettering republish a copy (confirmed) before acknowledging the
//! original, so a crash between the two duplicates a message but never loses one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use busway_core::redelivery::RedeliveryHeaders;
use busway_core::{Error, Result, Settle, Settlement};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::{BasicProperties, Channel};
use tokio::time::Instant;

use crate::broker::Shared;
use crate::publish::{Ensure, Outgoing};
use crate::topology;
use crate::{codec, error};

/// Where a delivery stands with the broker.
pub(super) enum State {
    /// Unsettled: the acker settles it.
    Held(lapin::Acker),
    /// Settled: the handle is spent.
    Settled,
    /// Its channel closed before it was settled: the broker has requeued it and delivers it
    /// again, counting the attempt.
    Lost,
}

/// Settles one delivery with the broker.
///
/// The [`Settle`] contract: `Ok` spends the handle; `Err` leaves it as it was, so the runtime
/// can try again or fall back (a copy sent before the failure at most duplicates the message),
/// unless the delivery was lost with its channel, which every later call reports too; dropped
/// unsettled, the message comes back with this attempt counted (see [`give_back`]).
pub(super) struct RabbitSettle {
    pub(super) state: State,
    pub(super) origin: Arc<Origin>,
}

/// The delivered message and where it came from: what a copy of it is made of.
pub(super) struct Origin {
    pub(super) shared: Arc<Shared>,
    /// Keeps the consumer's channel open until this delivery is settled: closing it would
    /// requeue the message behind the handler's back. Held, never read.
    pub(super) _channel: Arc<Channel>,
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) attempt: u32,
    pub(super) first_failure: Option<DateTime<Utc>>,
    pub(super) properties: BasicProperties,
    pub(super) body: Bytes,
}

/// The error of a settlement whose delivery went with its channel.
fn lost() -> Error {
    Error::Closed(
        "the delivery's channel closed before it was settled; the broker redelivers it, \
         counting the attempt"
            .into(),
    )
}

impl RabbitSettle {
    /// The acker, while the delivery can still be settled.
    fn acker(&mut self) -> Result<&lapin::Acker> {
        match &self.state {
            State::Held(acker) if acker.usable() => {}
            State::Held(_) => self.state = State::Lost,
            State::Settled => {
                return Err(Error::Closed("the delivery is settled already".into()));
            }
            State::Lost => {}
        }
        match &self.state {
            State::Held(acker) => Ok(acker),
            _ => Err(lost()),
        }
    }

    async fn ack(&mut self) -> Result<()> {
        let acked = self.acker()?.ack(BasicAckOptions::default()).await;
        // An acker is single-use: whatever the outcome, this one is spent. It fails only with
        // its channel, and the broker then requeues the message.
        match acked {
            Ok(true) => {
                self.state = State::Settled;
                Ok(())
            }
            Ok(false) => {
                self.state = State::Lost;
                Err(lost())
            }
            Err(e) => {
                self.state = State::Lost;
                Err(error::classify(e, "acknowledging"))
            }
        }
    }

    /// Republishes a copy that carries the next attempt and the first failure (to the group's
    /// queue, or the wait queue of the delay), then acks the original.
    async fn redeliver(&mut self, delay: Duration, first_failure: DateTime<Utc>) -> Result<()> {
        // A lost delivery comes back by itself: a copy now would only duplicate it.
        self.acker()?;
        self.origin.send_copy(delay, first_failure).await?;
        self.ack().await
    }

    /// Sends the original (body and properties as received) with the dead-letter metadata
    /// headers through the topic's dead-letter exchange to the group's DLQ, then acks it.
    async fn dead_letter(&mut self, metadata: &busway_core::DeadLetterMetadata) -> Result<()> {
        self.acker()?;
        self.origin.send_dead_letter(metadata).await?;
        self.ack().await
    }
}

impl Origin {
    /// Publishes a redelivery copy, confirmed, to the group's queue (no delay) or to the wait
    /// queue of the delay.
    async fn send_copy(&self, delay: Duration, first_failure: DateTime<Utc>) -> Result<()> {
        let shared = &self.shared;
        let work_queue = topology::work_queue(&self.topic, &self.group);
        let next = RedeliveryHeaders {
            attempt: self.attempt.saturating_add(1),
            first_failure,
            due: None,
        };
        let props = codec::redelivery_copy(&self.properties, &next);
        let deadline = Instant::now() + shared.config.publish_timeout;
        if delay.is_zero() {
            let out = Outgoing {
                exchange: "",
                routing_key: &work_queue,
                props,
                body: &self.body,
            };
            return shared.send(&out, Ensure::Nothing, deadline).await;
        }
        let ms = topology::quantize(delay);
        let wait_queue = topology::wait_queue(&self.topic, &self.group, ms);
        let out = Outgoing {
            exchange: "",
            routing_key: &wait_queue,
            props,
            body: &self.body,
        };
        match shared
            .send(
                &out,
                Ensure::WaitQueue(&self.topic, &self.group, ms),
                deadline,
            )
            .await
        {
            Ok(()) => Ok(()),
            // Only without declared topology: a missing wait queue must not lose the message,
            // nor loop it; it comes back at once instead, with a warning.
            Err(Error::Unroutable(reason)) if !shared.config.declare_topology => {
                tracing::warn!(queue = %wait_queue, %reason, "wait queue missing; redelivering without delay");
                let out = Outgoing {
                    routing_key: &work_queue,
                    ..out
                };
                shared.send(&out, Ensure::Nothing, deadline).await
            }
            Err(e) => Err(e),
        }
    }

    /// Publishes the dead letter, confirmed, to the group's DLQ.
    async fn send_dead_letter(&self, metadata: &busway_core::DeadLetterMetadata) -> Result<()> {
        let shared = &self.shared;
        let props = codec::dead_letter_copy(&self.properties, metadata);
        let exchange = topology::dead_letter_exchange(&self.topic);
        let key = topology::dead_letter_key(&self.topic, &self.group);
        let out = Outgoing {
            exchange: &exchange,
            routing_key: &key,
            props,
            body: &self.body,
        };
        let deadline = Instant::now() + shared.config.publish_timeout;
        shared.send(&out, Ensure::Nothing, deadline).await
    }
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn settle(&mut self, settlement: &Settlement) -> Result<()> {
        match settlement {
            Settlement::Ack => self.ack().await,
            Settlement::Redeliver {
                delay,
                first_failure,
            } => self.redeliver(*delay, *first_failure).await,
            Settlement::DeadLetter(metadata) => self.dead_letter(metadata).await,
        }
    }
}

impl Drop for RabbitSettle {
    fn drop(&mut self) {
        // Never settled (task aborted, settlement given up, handle dropped): give the message
        // back now, as a crash would, its attempt counted. A lost delivery is the broker's
        // already. Without a runtime, the channel's close (when its last handle goes) requeues
        // it.
        let State::Held(acker) = std::mem::replace(&mut self.state, State::Settled) else {
            return;
        };
        if !acker.usable() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(give_back(self.origin.clone(), acker));
        }
    }
}

/// Gives an unsettled delivery back to the broker with its attempt counted: as a redelivery
/// copy carrying the next attempt and the first failure (confirmed), then the original is
/// acked.
///
/// A plain requeue is not enough: a classic queue only flags a requeued message as
/// redelivered, and a flag cannot count, so a message whose handle is dropped again and again
/// would come back as attempt 2 forever, hot, never dead-lettered. Quorum queues would count
/// it (`x-delivery-count`) but forget when it first failed, which the dead letter reports. Only
/// if the copy cannot be sent is the original requeued (counted at least once by the broker).
async fn give_back(origin: Arc<Origin>, acker: lapin::Acker) {
    let first_failure = origin.first_failure.unwrap_or_else(Utc::now);
    match origin.send_copy(Duration::ZERO, first_failure).await {
        Ok(()) => {
            if !matches!(acker.ack(BasicAckOptions::default()).await, Ok(true)) {
                // The channel went meanwhile and the broker requeued the original: the
                // message comes back twice, never not at all.
                tracing::debug!(topic = %origin.topic, group = %origin.group, "the original of a given-back delivery was requeued with its channel");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, topic = %origin.topic, group = %origin.group, "could not give an unsettled delivery back as a copy; requeuing it");
            let _ = acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await;
        }
    }
}
