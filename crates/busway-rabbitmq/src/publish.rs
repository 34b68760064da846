//! Publishing with publisher confirms: persistent, `mandatory` (an unroutable message is an
//! error, not a silent drop), pipelined on one confirm channel, and retried across a lost
//! connection until the configured bound.

use std::time::Duration;

use async_trait::async_trait;
use busway_core::preflight::METADATA_HEADROOM;
use busway_core::{Error, ErrorKind, Message, Publisher, Result, Scheduler};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};
use tokio::time::Instant;

use crate::broker::{RabbitMqBroker, Shared};
use crate::connection::Link;
use crate::topology::{self, short};
use crate::{codec, error};

/// Pause before retrying a publish that met a transient failure (the supervisor is usually
/// already reconnecting; this only keeps a dead channel from being hammered).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// RabbitMQ's default `frame_max`.
const DEFAULT_FRAME_MAX: u32 = 131_072;

/// Topology a publish needs before it can be routed.
#[derive(Clone, Copy)]
pub(crate) enum Ensure<'a> {
    /// Nothing (the target is a queue that exists whenever its group does).
    Nothing,
    /// The topic's exchange.
    Topic(&'a str),
    /// A group's wait queue for a delay (ms).
    WaitQueue(&'a str, &'a str, u64),
    /// A topic's schedule queue for a delay (ms).
    ScheduleQueue(&'a str, u64),
}

/// One message to send: where, and what.
pub(crate) struct Outgoing<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: &'a str,
    pub(crate) props: BasicProperties,
    pub(crate) body: &'a [u8],
}

impl Shared {
    /// Sends one message and waits for its confirm, retrying transient failures (an outage)
    /// until `deadline`.
    pub(crate) async fn send(
        &self,
        out: &Outgoing<'_>,
        ensure: Ensure<'_>,
        deadline: Instant,
    ) -> Result<()> {
        self.check_frame(out)?;
        let mut last: Option<Error> = None;
        loop {
            if Instant::now() >= deadline {
                let expired = Error::Timeout("no time left to publish".into());
                return Err(self.gave_up(out, expired, last));
            }
            let link = match self.publish.link(deadline).await {
                Ok(link) => link,
                Err(e) if e.kind() == ErrorKind::Closed => return Err(e),
                Err(e) => return Err(self.gave_up(out, e, last)),
            };
            match self.try_send(&link, out, ensure, deadline).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, exchange = out.exchange, "publish failed; retrying");
                    last = Some(e);
                    tokio::time::sleep_until((Instant::now() + RETRY_PAUSE).min(deadline)).await;
                }
                Err(e) if e.is_transient() => return Err(self.gave_up(out, e, last)),
                Err(e) => return Err(e),
            }
        }
    }

    /// The error of a publish that ran out of time: what was being published, for how long,
    /// and the failure behind it.
    fn gave_up(&self, out: &Outgoing<'_>, error: Error, last: Option<Error>) -> Error {
        let target = if out.exchange.is_empty() {
            format!("queue `{}`", out.routing_key)
        } else {
            format!("exchange `{}`", out.exchange)
        };
        let cause = last.map_or_else(
            || error.to_string(),
            |l| format!("{error} (last failure: {l})"),
        );
        Error::Timeout(format!(
            "publish to {target} not confirmed within the publish timeout of {:?}: {cause}",
            self.config.publish_timeout
        ))
    }

    async fn ensure(&self, link: &Link, ensure: Ensure<'_>) -> Result<()> {
        if !self.config.declare_topology {
            return Ok(());
        }
        if matches!(ensure, Ensure::Nothing) {
            return Ok(());
        }
        let ch = self.publish_admin.get(link).await?;
        match ensure {
            Ensure::Nothing => Ok(()),
            Ensure::Topic(topic) => self.topology.topic(&ch, link.generation, topic).await,
            Ensure::WaitQueue(topic, group, ms) => self
                .topology
                .wait_queue(&ch, topic, group, ms)
                .await
                .map(drop),
            Ensure::ScheduleQueue(topic, ms) => self
                .topology
                .schedule_queue(&ch, link.generation, topic, ms)
                .await
                .map(drop),
        }
    }

    async fn try_send(
        &self,
        link: &Link,
        out: &Outgoing<'_>,
        ensure: Ensure<'_>,
        deadline: Instant,
    ) -> Result<()> {
        self.ensure(link, ensure).await?;
        let ch = self.publish_channel.get(link).await?;
        let confirm = publish_on(&ch, out, out.props.clone()).await?;
        let confirmation = tokio::time::timeout_at(deadline, confirm)
            .await
            .map_err(|_| Error::Timeout("the broker did not confirm the publish".into()))?
            .map_err(|e| error::classify(e, "waiting for the publish confirm"))?;
        check(confirmation, out)
    }

    /// Sends several messages pipelined (all published, then all confirms awaited); those hit
    /// by a transient failure are then resent one by one. The pipeline gives each message's
    /// properties away rather than copying them; `properties` rebuilds them for a resend.
    pub(crate) async fn send_batch(
        &self,
        outs: &mut [Outgoing<'_>],
        properties: impl Fn(usize) -> Result<BasicProperties>,
        ensure: Ensure<'_>,
        deadline: Instant,
    ) -> Result<()> {
        let mut retry: Vec<usize> = Vec::new();
        let mut refused: Option<Error> = None;
        match self.publish.link(deadline).await {
            Err(_) => retry.extend(0..outs.len()),
            Ok(link) => match self.pipeline(&link, outs, ensure, deadline).await {
                Err(_) => retry.extend(0..outs.len()),
                Ok(outcomes) => {
                    for (i, outcome) in outcomes.into_iter().enumerate() {
                        match outcome {
                            Ok(()) => {}
                            Err(e) if e.is_transient() => retry.push(i),
                            Err(e) => {
                                refused.get_or_insert(e);
                            }
                        }
                    }
                }
            },
        }
        for i in retry {
            outs[i].props = properties(i)?;
            if let Err(e) = self.send(&outs[i], ensure, deadline).await {
                if !e.is_transient() {
                    refused.get_or_insert(e);
                    continue;
                }
                return Err(e);
            }
        }
        refused.map_or(Ok(()), Err)
    }

    async fn pipeline(
        &self,
        link: &Link,
        outs: &mut [Outgoing<'_>],
        ensure: Ensure<'_>,
        deadline: Instant,
    ) -> Result<Vec<Result<()>>> {
        self.ensure(link, ensure).await?;
        let ch = self.publish_channel.get(link).await?;
        let mut confirms = Vec::with_capacity(outs.len());
        for out in outs.iter_mut() {
            let props = std::mem::take(&mut out.props);
            let sent = publish_on(&ch, out, props).await;
            confirms.push(sent);
        }
        let waits = confirms
            .into_iter()
            .zip(outs.iter())
            .map(|(sent, out)| async move {
                let confirmation = sent?
                    .await
                    .map_err(|e| error::classify(e, "waiting for the publish confirm"))?;
                check(confirmation, out)
            });
        // One timer for the whole window rather than one per message.
        match tokio::time::timeout_at(deadline, join_all(waits)).await {
            Ok(outcomes) => Ok(outcomes),
            Err(_) => Err(Error::Timeout(
                "the broker did not confirm the batch in time".into(),
            )),
        }
    }

    /// Refuses what cannot be published, before anything is sent, and returns the message's
    /// properties. Two limits keep room for the metadata a redelivery or dead-letter copy
    /// adds, so that whatever is published can take those paths later: the message's size
    /// against `max_message_bytes`, and its properties against the AMQP frame they must fit in
    /// (see [`codec::header_frame_len`]), each less
    /// [`METADATA_HEADROOM`](busway_core::preflight::METADATA_HEADROOM).
    pub(crate) fn check(&self, topic: &str, message: &Message) -> Result<BasicProperties> {
        topology::check_name("topic", topic)?;
        self.limit.check(topic, message, message.encoded_len())?;
        let props = codec::encode(message)?;
        let header = codec::header_frame_len(&props);
        let limit = self.header_frame_limit().saturating_sub(METADATA_HEADROOM);
        if header > limit {
            return Err(Error::TooLarge {
                size: header,
                limit,
            });
        }
        Ok(props)
    }

    /// The largest content-header frame payload the publishing connection takes.
    fn header_frame_limit(&self) -> usize {
        // When the connection is down, the frame size it will most likely negotiate again:
        // RabbitMQ's default.
        let frame_max = self.publish.frame_max().unwrap_or(DEFAULT_FRAME_MAX);
        // 0 would mean "no limit", which RabbitMQ never negotiates.
        let frame_max = if frame_max == 0 { u32::MAX } else { frame_max };
        usize::try_from(frame_max)
            .unwrap_or(usize::MAX)
            .saturating_sub(codec::FRAME_OVERHEAD)
    }

    /// Refuses a message (a copy, a released or redriven message) whose properties do not fit
    /// in one frame: RabbitMQ would close the whole publishing connection over it.
    fn check_frame(&self, out: &Outgoing<'_>) -> Result<()> {
        let header = codec::header_frame_len(&out.props);
        let limit = self.header_frame_limit();
        if header > limit {
            return Err(Error::TooLarge {
                size: header,
                limit,
            });
        }
        Ok(())
    }
}

/// Turns the broker's answer into the publish result.
fn check(confirmation: Confirmation, out: &Outgoing<'_>) -> Result<()> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => {
            let target = if out.exchange.is_empty() {
                format!("queue `{}` does not exist", out.routing_key)
            } else {
                format!(
                    "no queue is bound to exchange `{}` (is any group subscribed?)",
                    out.exchange
                )
            };
            Err(Error::Unroutable(format!(
                "{target}; the broker returned it: {}",
                returned.reply_text
            )))
        }
        Confirmation::Nack(_) => Err(Error::Rejected(format!(
            "the broker nacked the message published to `{}`/`{}` (queue limit or internal error)",
            out.exchange, out.routing_key
        ))),
    }
}

/// The routing key of a message on its topic exchange: its type, so that queues bound by other
/// tools can select event types with topic patterns (busway's own groups bind `#`).
fn routing_key(message: &Message) -> &str {
    let ty = message.ty();
    if ty.len() <= 255 { ty } else { "" }
}

#[async_trait]
impl Publisher for RabbitMqBroker {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        let shared = &self.shared;
        let props = shared.check(topic, &message)?;
        let out = Outgoing {
            exchange: topology::exchange(topic),
            routing_key: routing_key(&message),
            props,
            body: message.data(),
        };
        let deadline = Instant::now() + shared.config.publish_timeout;
        shared.send(&out, Ensure::Topic(topic), deadline).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        let shared = &self.shared;
        // One bad message refuses the whole batch before any of it is sent.
        let mut outs = messages
            .iter()
            .map(|m| {
                Ok(Outgoing {
                    exchange: topology::exchange(topic),
                    routing_key: routing_key(m),
                    props: shared.check(topic, m)?,
                    body: m.data(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let deadline = Instant::now() + shared.config.publish_timeout;
        shared
            .send_batch(
                &mut outs,
                |i| codec::encode(&messages[i]),
                Ensure::Topic(topic),
                deadline,
            )
            .await
    }
}

#[async_trait]
impl Scheduler for RabbitMqBroker {
    /// Holds the message in the topic's schedule queue for the delay (message TTL, no plugin),
    /// after which RabbitMQ dead-letters it into the topic's due exchange, bound to every group.
    /// Delays are rounded up to three significant digits of milliseconds (never early, at most
    /// 1% late). A message that falls due while no group is bound is parked, not dropped, and
    /// delivered to the next group that subscribes (see the topology in the crate docs).
    ///
    /// A delay longer than a queue's TTL can be (~49 days) is waited in hops: the message
    /// carries its due time (`busway-due`), and each group's consumer that receives it early
    /// sends it through the group's wait queue again, until it is due.
    async fn schedule(
        &self,
        topic: &str,
        message: Message,
        deliver_at: DateTime<Utc>,
    ) -> Result<()> {
        let shared = &self.shared;
        let props = shared.check(topic, &message)?;
        let Ok(delay) = (deliver_at - Utc::now()).to_std() else {
            return self.publish(topic, message).await;
        };
        if delay.is_zero() {
            return self.publish(topic, message).await;
        }
        let mut ms = topology::quantize(delay);
        let mut props = props;
        if ms > topology::MAX_HOP_MS {
            ms = topology::MAX_HOP_MS;
            props = codec::with_due(&props, deliver_at);
        }
        let queue = topology::schedule_queue(topic, ms);
        let out = Outgoing {
            exchange: "",
            routing_key: &queue,
            props,
            body: message.data(),
        };
        let deadline = Instant::now() + shared.config.publish_timeout;
        shared
            .send(&out, Ensure::ScheduleQueue(topic, ms), deadline)
            .await
    }
}

/// Publishes `out` with `props` on `ch`, mandatory (so an unroutable message comes back), and
/// returns the confirm still to be awaited.
async fn publish_on(
    ch: &lapin::Channel,
    out: &Outgoing<'_>,
    props: BasicProperties,
) -> Result<lapin::PublisherConfirm> {
    ch.basic_publish(
        short(out.exchange)?,
        short(out.routing_key)?,
        BasicPublishOptions {
            mandatory: true,
            immediate: false,
        },
        out.body,
        props,
    )
    .await
    .map_err(|e| error::classify(e, "publishing"))
}
