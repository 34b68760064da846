//! Listing, peeking, redriving and purging the `<topic>.<group>.dlq` queues.
//!
//! Peeking takes messages with `basic.get` and gives them all back (`basic.nack`, requeue) in
//! one go, which puts them back in their original positions. Redriving moves messages one at a
//! time: the copy sent to the group's queue is confirmed before the dead letter is acked.

use async_trait::async_trait;
use busway_core::{
    DeadLetter, DeadLetterMetadata, DeadLetterQueue, DeadLetters, Error, Message, Result,
};
use bytes::Bytes;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use tokio::time::Instant;

use crate::broker::RabbitMqBroker;
use crate::connection::Link;
use crate::publish::{Ensure, Outgoing};
use crate::topology::{self, short};
use crate::{codec, error};

const REQUEUE: BasicNackOptions = BasicNackOptions {
    multiple: true,
    requeue: true,
};

impl RabbitMqBroker {
    async fn dlq_link(&self) -> Result<std::sync::Arc<Link>> {
        let deadline = Instant::now() + self.shared.config.publish_timeout;
        self.shared.consume.link(deadline).await
    }

    fn dead_letter(props: &BasicProperties, data: Vec<u8>, topic: &str) -> DeadLetter {
        let body = Bytes::from(data);
        let message = codec::decode(props, body.clone(), topic)
            .unwrap_or_else(|_| Message::undecodable(body, codec::message_id(props)));
        let metadata = DeadLetterMetadata::from_headers(|name| codec::header(props, name));
        DeadLetter { message, metadata }
    }
}

/// Closes a channel used for one operation; a failure only means it is gone already.
async fn done(channel: Channel) {
    let _ = channel.close(200, "OK".into()).await;
}

/// Waits (briefly, at most [`REQUEUE_VISIBLE_WITHIN`]) until `queue` counts at least `peeked`
/// ready messages again. `basic.nack` has no reply, and a quorum queue applies the requeue
/// through its Raft log after that: without the wait, a `list` right after a `peek` could report
/// the peeked messages missing. Gives up quietly: the messages are back either way, only the
/// count may lag (or another consumer took them meanwhile).
async fn counted_again(channel: &Channel, queue: &str, peeked: usize) {
    let Ok(name) = short(queue) else { return };
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let deadline = Instant::now() + REQUEUE_VISIBLE_WITHIN;
    while let Ok(state) = channel
        .queue_declare(name.clone(), passive, FieldTable::default())
        .await
    {
        if usize::try_from(state.message_count()).unwrap_or(usize::MAX) >= peeked
            || Instant::now() >= deadline
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How long [`counted_again`] waits for requeued messages to be counted.
const REQUEUE_VISIBLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

#[async_trait]
impl DeadLetters for RabbitMqBroker {
    /// The DLQs of the groups this broker handle has subscribed to or inspected (AMQP 0-9-1
    /// cannot enumerate queues; the management API can, but is not always enabled), with their
    /// depth. Groups whose DLQ does not exist are left out.
    async fn list(&self) -> Result<Vec<DeadLetterQueue>> {
        let link = self.dlq_link().await?;
        let mut queues = Vec::new();
        let mut channel: Option<Channel> = None;
        for (topic, group) in self.shared.known_groups() {
            let ch = match channel.take() {
                Some(ch) => ch,
                None => link.channel("listing dead-letter queues").await?,
            };
            let name = topology::dead_letter_queue(&topic, &group);
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match ch
                .queue_declare(short(&name)?, passive, FieldTable::default())
                .await
            {
                Ok(queue) => {
                    queues.push(DeadLetterQueue {
                        topic,
                        group,
                        depth: u64::from(queue.message_count()),
                    });
                    channel = Some(ch);
                }
                // The broker closed the channel with the 404; the next check opens another.
                Err(e) if error::is_not_found(&e) => {}
                Err(e) => return Err(error::classify(e, &format!("inspecting queue `{name}`"))),
            }
        }
        if let Some(ch) = channel {
            done(ch).await;
        }
        Ok(queues)
    }

    async fn peek(&self, topic: &str, group: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        topology::check_name("topic", topic)?;
        topology::check_name("group", group)?;
        self.shared.remember_group(topic, group);
        let name = topology::dead_letter_queue(topic, group);
        let link = self.dlq_link().await?;
        let ch = link.channel("peeking dead letters").await?;
        let mut letters = Vec::new();
        let mut last_tag = None;
        while letters.len() < limit {
            match ch
                .basic_get(short(&name)?, BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(got)) => {
                    let d = got.delivery;
                    last_tag = Some(d.delivery_tag);
                    letters.push(Self::dead_letter(&d.properties, d.data, topic));
                }
                Ok(None) => break,
                Err(e) if error::is_not_found(&e) => return Ok(Vec::new()),
                Err(e) => return Err(error::classify(e, &format!("peeking queue `{name}`"))),
            }
        }
        if let Some(tag) = last_tag {
            ch.basic_nack(tag, REQUEUE)
                .await
                .map_err(|e| error::classify(e, "giving peeked dead letters back"))?;
            counted_again(&ch, &name, letters.len()).await;
        }
        done(ch).await;
        Ok(letters)
    }

    async fn redrive(&self, topic: &str, group: &str, limit: Option<usize>) -> Result<usize> {
        topology::check_name("topic", topic)?;
        topology::check_name("group", group)?;
        self.shared.remember_group(topic, group);
        let name = topology::dead_letter_queue(topic, group);
        let work_queue = topology::work_queue(topic, group);
        let link = self.dlq_link().await?;
        let ch = link.channel("redriving dead letters").await?;
        let mut moved = 0;
        while limit.is_none_or(|limit| moved < limit) {
            let got = match ch
                .basic_get(short(&name)?, BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(got)) => got.delivery,
                Ok(None) => break,
                Err(e) if error::is_not_found(&e) => {
                    return Err(Error::config(
                        "group",
                        format!(
                            "no dead-letter queue `{name}` for group {group:?} of topic {topic:?}"
                        ),
                    ));
                }
                Err(e) => return Err(error::classify(e, &format!("reading queue `{name}`"))),
            };
            // Back to the group as it was first published: no dead-letter metadata, no attempt
            // count (it gets a fresh set of attempts), no broker dead-lettering history.
            let props = codec::with_headers(&got.properties, |h| {
                h.retain(|k, _| {
                    !k.as_str().starts_with("busway-") && !codec::is_broker_bookkeeping(k.as_str())
                });
            });
            let out = Outgoing {
                exchange: "",
                routing_key: &work_queue,
                props,
                body: &got.data,
            };
            let deadline = Instant::now() + self.shared.config.publish_timeout;
            if let Err(e) = self.shared.send(&out, Ensure::Nothing, deadline).await {
                let _ = got.acker.nack(REQUEUE).await;
                done(ch).await;
                return Err(e);
            }
            match got.acker.ack(BasicAckOptions::default()).await {
                Ok(true) => moved += 1,
                // The copy is in the group's queue; the dead letter stays too (at least once).
                Ok(false) => {
                    return Err(Error::Connection {
                        message: "the connection dropped while redriving; the last message may be redriven twice".into(),
                        source: None,
                    });
                }
                Err(e) => return Err(error::classify(e, "acknowledging a redriven dead letter")),
            }
        }
        done(ch).await;
        Ok(moved)
    }

    async fn purge(&self, topic: &str, group: &str) -> Result<usize> {
        topology::check_name("topic", topic)?;
        topology::check_name("group", group)?;
        let name = topology::dead_letter_queue(topic, group);
        let link = self.dlq_link().await?;
        let ch = link.channel("purging dead letters").await?;
        let purged = match ch
            .queue_purge(short(&name)?, QueuePurgeOptions::default())
            .await
        {
            Ok(n) => n,
            Err(e) if error::is_not_found(&e) => return Ok(0),
            Err(e) => return Err(error::classify(e, &format!("purging queue `{name}`"))),
        };
        done(ch).await;
        Ok(usize::try_from(purged).unwrap_or(usize::MAX))
    }
}
