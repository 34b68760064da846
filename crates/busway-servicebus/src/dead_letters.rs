//! [`DeadLetters`] on Service Bus's native dead-letter subqueues
//! (`<topic>/Subscriptions/<group>/$DeadLetterQueue`).

use std::time::Duration;

use async_trait::async_trait;
use azservicebus::{
    ServiceBusReceiveMode, ServiceBusReceiver, ServiceBusReceiverOptions, SubQueue,
};
use busway_core::{DeadLetter, DeadLetterQueue, DeadLetters, Result};

use crate::broker::ServiceBusBroker;
use crate::codec;
use crate::connection::CLOSE_TIMEOUT;
use crate::error::classify;

/// Messages asked for per round trip.
const PAGE: u32 = 100;
/// How long a receive waits before concluding the queue is empty.
const EMPTY_AFTER: Duration = Duration::from_secs(1);
/// Depth counting stops here; `list` reports it as the depth ("at least").
const MAX_COUNTED: usize = 10_000;

impl ServiceBusBroker {
    async fn dead_letter_receiver(
        &self,
        topic: &str,
        group: &str,
        mode: ServiceBusReceiveMode,
    ) -> Result<(ServiceBusReceiver, String)> {
        let entity = self.receive_entity(topic, group);
        let options = ServiceBusReceiverOptions {
            receive_mode: mode,
            sub_queue: SubQueue::DeadLetter,
            ..ServiceBusReceiverOptions::default()
        };
        let receiver = self
            .inner
            .connection
            .open("opening a dead-letter receiver", &entity, |client| {
                let (entity, options) = (entity.clone(), options.clone());
                Box::pin(async move { client.create_receiver_for_queue(entity, options).await })
            })
            .await?;
        Ok((receiver, format!("{entity}/$DeadLetterQueue")))
    }

    /// Peeks up to `limit` dead letters, oldest first, as raw messages.
    async fn peek_raw(
        &self,
        topic: &str,
        group: &str,
        limit: usize,
    ) -> Result<Vec<azservicebus::ServiceBusPeekedMessage>> {
        let (mut receiver, path) = self
            .dead_letter_receiver(topic, group, ServiceBusReceiveMode::PeekLock)
            .await?;
        let mut out = Vec::new();
        let result = async {
            while out.len() < limit {
                let want = (limit - out.len()).min(PAGE as usize) as u32;
                // The receiver remembers the last sequence number peeked and continues after it.
                let page = receiver
                    .peek_messages(want, None)
                    .await
                    .map_err(|e| classify("peeking", &path, e))?;
                if page.is_empty() {
                    break;
                }
                out.extend(page);
            }
            Ok::<_, busway_core::Error>(())
        }
        .await;
        dispose(receiver).await;
        result.map(|()| out)
    }
}

async fn dispose(receiver: ServiceBusReceiver) {
    if let Ok(Err(e)) = tokio::time::timeout(CLOSE_TIMEOUT, receiver.dispose()).await {
        tracing::debug!(error = %e, "disposing a dead-letter receiver");
    }
}

#[async_trait]
impl DeadLetters for ServiceBusBroker {
    /// The dead-letter queues of the groups this broker subscribed to (or inspected), with their
    /// depth counted by peeking. Service Bus's AMQP interface cannot enumerate subscriptions.
    async fn list(&self) -> Result<Vec<DeadLetterQueue>> {
        let groups: Vec<(String, String)> = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut queues = Vec::with_capacity(groups.len());
        for (topic, group) in groups {
            let depth = self.peek_raw(&topic, &group, MAX_COUNTED).await?.len() as u64;
            queues.push(DeadLetterQueue {
                topic,
                group,
                depth,
            });
        }
        Ok(queues)
    }

    async fn peek(&self, topic: &str, group: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        self.remember(topic, group);
        let raw = self.peek_raw(topic, group, limit).await?;
        Ok(raw
            .iter()
            .map(|m| {
                let raw = m.raw_amqp_message();
                DeadLetter {
                    message: codec::decode(raw).message,
                    // None for messages the broker dead-lettered itself (delivery count, TTL).
                    metadata: codec::dead_letter_metadata(raw),
                }
            })
            .collect())
    }

    /// Sends dead letters back to their group only (see the crate docs on routing rules), then
    /// removes them from the dead-letter queue. Each copy starts again at attempt 1. Fails with
    /// a configuration error naming `servicebus.manage_rules`, before anything is sent, when
    /// the group's routing rules are not in place.
    async fn redrive(&self, topic: &str, group: &str, limit: Option<usize>) -> Result<usize> {
        self.remember(topic, group);
        self.ensure_routing(topic, group).await?;
        let entity = self.entity(topic);
        let (mut receiver, path) = self
            .dead_letter_receiver(topic, group, ServiceBusReceiveMode::PeekLock)
            .await?;
        let limit = limit.unwrap_or(usize::MAX);
        let queue = self.is_queue(topic);
        let mut moved = 0;
        let result = async {
            while moved < limit {
                let want = (limit - moved).min(PAGE as usize) as u32;
                let batch = receiver
                    .receive_messages_with_max_wait_time(want, EMPTY_AFTER)
                    .await
                    .map_err(|e| classify("receiving dead letters", &path, e))?;
                if batch.is_empty() {
                    break;
                }
                for message in batch {
                    let mut copy = match codec::resend_copy(message.raw_amqp_message()) {
                        Ok(copy) => copy,
                        Err(e) => {
                            tracing::warn!(error = %e, "a dead letter cannot be redriven; it stays");
                            let _ = receiver.abandon_message(&message, None).await;
                            continue;
                        }
                    };
                    if !queue {
                        codec::set_property(&mut copy, codec::TARGET_GROUP, group.to_owned());
                    }
                    if let Err(e) = self.inner.senders.send(&entity, copy).await {
                        let _ = receiver.abandon_message(&message, None).await;
                        return Err(e);
                    }
                    receiver
                        .complete_message(&message)
                        .await
                        .map_err(|e| classify("removing a redriven dead letter", &path, e))?;
                    moved += 1;
                }
            }
            Ok(())
        }
        .await;
        dispose(receiver).await;
        result.map(|()| moved)
    }

    async fn purge(&self, topic: &str, group: &str) -> Result<usize> {
        self.remember(topic, group);
        let (mut receiver, path) = self
            .dead_letter_receiver(topic, group, ServiceBusReceiveMode::ReceiveAndDelete)
            .await?;
        let mut purged = 0;
        let result = async {
            loop {
                let batch = receiver
                    .receive_messages_with_max_wait_time(PAGE, EMPTY_AFTER)
                    .await
                    .map_err(|e| classify("purging", &path, e))?;
                if batch.is_empty() {
                    return Ok(());
                }
                purged += batch.len();
            }
        }
        .await;
        dispose(receiver).await;
        result.map(|()| purged)
    }
}
