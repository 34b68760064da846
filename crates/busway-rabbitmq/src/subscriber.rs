//! Consuming a group's queue with manual acks, and settling deliveries.
//!
//! Each subscription has its own channel (prefetch is per channel) on the consuming connection.
//! After a lost connection it re-declares its group and consumes again on the next connection.
//! Redelivery and dead-lettering republish a copy (confirmed) before acknowledging the
//! original, so a crash between the two duplicates a message but never loses one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use busway_core::redelivery::RedeliveryHeaders;
use busway_core::{
    Delivery, DeliveryInfo, Error, Result, Settle, Settlement, StartPosition, SubscribeOptions,
    Subscriber, Subscription,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer};
use tokio::time::Instant;

use crate::broker::{RabbitMqBroker, Shared};
use crate::publisher::{Ensure, Outgoing};
use crate::topology::{self, short};
use crate::{codec, error};

/// How long `close` waits for deliveries the broker pushed before the cancel took effect.
const DRAIN_AFTER_CANCEL: Duration = Duration::from_secs(2);

#[async_trait]
impl Subscriber for RabbitMqBroker {
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        topology::check_name("topic", topic)?;
        topology::check_group(group)?;
        if options.start == StartPosition::Earliest {
            // Classic and quorum queues keep no history: a new group starts with what is
            // published after its queue is bound.
            tracing::debug!(
                topic,
                group,
                "RabbitMQ queues have no history; starting at the latest message"
            );
        }
        let mut subscription = RabbitSubscription {
            shared: self.shared.clone(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            queue: topology::work_queue(topic, group),
            options,
            active: None,
            closed: false,
        };
        // Subscribing fails loudly (bad credentials, conflicting queue arguments) rather than
        // surfacing later as a stream of errors.
        let deadline = Instant::now() + self.shared.config.publish_timeout;
        subscription.start(deadline).await?;
        self.shared.remember_group(topic, group);
        Ok(Box::new(subscription))
    }
}

/// One consumer on the current connection.
struct Active {
    /// Shared by the deliveries through our own `Arc`: cloning lapin's `Channel` itself per
    /// delivery touches a dozen reference counts that sit next to data lapin's I/O thread is
    /// busy with.
    channel: Arc<Channel>,
    consumer: Consumer,
}

struct RabbitSubscription {
    shared: Arc<Shared>,
    topic: String,
    group: String,
    queue: String,
    options: SubscribeOptions,
    active: Option<Active>,
    closed: bool,
}

impl RabbitSubscription {
    /// Declares the group (unless told not to), opens a channel with the prefetch and consumes.
    async fn start(&mut self, deadline: Instant) -> Result<()> {
        let shared = &self.shared;
        let link = shared.consume.link(deadline).await?;
        let channel = link.channel("consuming").await?;
        if shared.config.declare_topology {
            shared
                .topology
                .group(&channel, &self.topic, &self.group, self.options.ordering)
                .await?;
        }
        // Once the group is bound, nothing falling due is parked for this topic any more:
        // deliver what fell due before.
        shared.release_parked(&link, &self.topic).await;
        let prefetch = u16::try_from(self.options.prefetch.max(1)).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| error::map(e, "setting the prefetch"))?;
        let tag = format!("busway-{}-{}", self.queue, uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                short(&self.queue)?,
                short(&tag).unwrap_or_else(|_| "".into()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| error::map(e, &format!("consuming queue `{}`", self.queue)))?;
        self.active = Some(Active {
            channel: Arc::new(channel),
            consumer,
        });
        Ok(())
    }

    fn delivery(&self, channel: &Arc<Channel>, d: lapin::message::Delivery) -> Delivery {
        let lapin::message::Delivery {
            redelivered,
            properties,
            data,
            acker,
            ..
        } = d;
        let body = Bytes::from(data);
        let (attempt, first_failure) = codec::attempt_of(&properties, redelivered);
        let (message, decode_error) = match codec::decode(&properties, body.clone(), &self.topic) {
            Ok(message) => (message, None),
            Err(e) => (
                codec::undecodable(&properties, body.clone(), &self.topic),
                Some(e.to_string()),
            ),
        };
        let info = DeliveryInfo {
            first_failure,
            decode_error,
            ..DeliveryInfo::new(&self.topic, &self.group, attempt)
        };
        let settle = RabbitSettle {
            state: State::Held(acker),
            origin: Arc::new(Origin {
                shared: self.shared.clone(),
                _channel: channel.clone(),
                topic: self.topic.clone(),
                group: self.group.clone(),
                attempt,
                first_failure,
                properties,
                body,
            }),
        };
        Delivery::new(message, info, Box::new(settle))
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.closed {
                return None;
            }
            let Some(active) = self.active.as_mut() else {
                let deadline = Instant::now() + self.shared.config.publish_timeout;
                match self.start(deadline).await {
                    Ok(()) => {
                        tracing::info!(topic = %self.topic, group = %self.group, "consuming again");
                        continue;
                    }
                    Err(e) => return Some(Err(e)),
                }
            };
            match active.consumer.next().await {
                Some(Ok(d)) => {
                    let channel = active.channel.clone();
                    return Some(Ok(self.delivery(&channel, d)));
                }
                Some(Err(e)) => {
                    self.active = None;
                    return Some(Err(error::map(
                        e,
                        &format!("consuming queue `{}`", self.queue),
                    )));
                }
                None => {
                    // Cancelled by the broker (queue deleted, node down) or after a channel error.
                    self.active = None;
                    return Some(Err(Error::Connection {
                        message: format!(
                            "the consumer of queue `{}` was cancelled; consuming again",
                            self.queue
                        ),
                        source: None,
                    }));
                }
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.closed = true;
        if let Some(active) = self.active.take() {
            cancel_and_release(active).await;
        }
        Ok(())
    }
}

impl Drop for RabbitSubscription {
    fn drop(&mut self) {
        // Dropped without close: release what was prefetched in the background. Handed-out
        // deliveries keep the channel open until they are settled or dropped.
        if let Some(active) = self.active.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(cancel_and_release(active));
        }
    }
}

/// Stops the consumer, then gives back (nack + requeue) whatever the broker had already pushed
/// and nobody took. The channel itself stays open while handed-out deliveries hold it.
async fn cancel_and_release(active: Active) {
    let Active {
        channel,
        mut consumer,
    } = active;
    let tag = consumer.tag();
    if let Err(e) = channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await
    {
        // The channel is gone already: the broker requeued everything with it.
        tracing::debug!(error = %e, "cancelling a consumer whose channel is gone");
        return;
    }
    let deadline = Instant::now() + DRAIN_AFTER_CANCEL;
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, consumer.next()).await {
        let _ = d
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await;
    }
}

/// Where a delivery stands with the broker.
enum State {
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
struct RabbitSettle {
    state: State,
    origin: Arc<Origin>,
}

/// The delivered message and where it came from: what a copy of it is made of.
struct Origin {
    shared: Arc<Shared>,
    /// Keeps the consumer's channel open until this delivery is settled: closing it would
    /// requeue the message behind the handler's back. Held, never read.
    _channel: Arc<Channel>,
    topic: String,
    group: String,
    attempt: u32,
    first_failure: Option<DateTime<Utc>>,
    properties: BasicProperties,
    body: Bytes,
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
                Err(error::map(e, "acknowledging"))
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
