//! Consuming a group's queue with manual acks; [`settle`] settles each delivery.
//!
//! Each subscription has its own channel (prefetch is per channel) on the consuming connection.
//! After a lost connection it re-declares its group and consumes again on the next connection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use busway_core::{
    Broker, Delivery, DeliveryInfo, Error, Result, SubscribeOptions, Subscriber, Subscription,
};
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio::time::Instant;

use crate::broker::{RabbitMqBroker, Shared};
use crate::topology::{self, short};
use crate::{codec, error};

mod due;
mod settle;

use settle::{Origin, RabbitSettle, State};

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
        // `earliest` is refused even when the queue exists already (and the setting would
        // change nothing): whether a consumer starts must not depend on the broker's state.
        self.capabilities().check_subscribe(&options)?;
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
            .map_err(|e| error::classify(e, "setting the prefetch"))?;
        let tag = format!("busway-{}-{}", self.queue, uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                short(&self.queue)?,
                short(&tag).unwrap_or_else(|_| "".into()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| error::classify(e, &format!("consuming queue `{}`", self.queue)))?;
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
        let decoded = codec::decode(&properties, body.clone(), &self.topic);
        let broker_id = codec::message_id(&properties).map(str::to_owned);
        let info = DeliveryInfo {
            first_failure,
            ..DeliveryInfo::new(&self.topic, &self.group, attempt)
        };
        let settle = Box::new(RabbitSettle {
            state: State::Held(acker),
            origin: Arc::new(Origin {
                shared: self.shared.clone(),
                _channel: channel.clone(),
                topic: self.topic.clone(),
                group: self.group.clone(),
                attempt,
                first_failure,
                properties,
                body: body.clone(),
            }),
        });
        match decoded {
            Ok(message) => Delivery::new(message, info, settle),
            // Dead-lettered by the runtime; the dead letter is the original (`Origin`).
            Err(e) => {
                Delivery::undecodable(body, broker_id.as_deref(), e.to_string(), info, settle)
            }
        }
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
                    let d = match due::early(&d, chrono::Utc::now()) {
                        None => d,
                        Some(at) => {
                            let held =
                                due::hold_back(&self.shared, &self.topic, &self.group, d, at);
                            match held.await {
                                None => continue,
                                Some(d) => d,
                            }
                        }
                    };
                    return Some(Ok(self.delivery(&channel, d)));
                }
                Some(Err(e)) => {
                    self.active = None;
                    return Some(Err(error::classify(
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
