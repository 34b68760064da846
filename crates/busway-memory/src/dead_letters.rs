//! Listing, peeking, redriving and purging the in-process dead-letter queues.

use async_trait::async_trait;
use busway_core::{DeadLetter, DeadLetterQueue, DeadLetters, Error, Result};

use crate::broker::MemoryBroker;
use crate::queue::Entry;

#[async_trait]
impl DeadLetters for MemoryBroker {
    async fn list(&self) -> Result<Vec<DeadLetterQueue>> {
        let mut queues: Vec<DeadLetterQueue> = self
            .all_groups()
            .iter()
            .map(|q| DeadLetterQueue {
                topic: q.topic.clone(),
                group: q.group.clone(),
                depth: q.dead_depth() as u64,
            })
            .collect();
        queues.sort_by(|a, b| (&a.topic, &a.group).cmp(&(&b.topic, &b.group)));
        Ok(queues)
    }

    async fn peek(&self, topic: &str, group: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .group(topic, group)
            .map(|q| q.peek_dead(limit))
            .unwrap_or_default())
    }

    async fn redrive(&self, topic: &str, group: &str, limit: Option<usize>) -> Result<usize> {
        let Some(queue) = self.group(topic, group) else {
            return Err(Error::config(
                "group",
                format!("no group {group:?} on topic {topic:?}"),
            ));
        };
        let mut letters = queue.take_dead(limit.unwrap_or(usize::MAX)).into_iter();
        let mut moved = 0;
        while let Some(letter) = letters.next() {
            match self.reserve(&queue).await {
                Ok(slot) => {
                    queue.push(Entry {
                        message: letter.message,
                        deliveries: 0,
                        first_failure: None,
                        _slot: slot,
                    });
                    moved += 1;
                }
                Err(e) => {
                    // Nothing is lost: what was not moved goes back to the dead-letter queue.
                    queue.return_dead(std::iter::once(letter).chain(letters).collect());
                    return Err(e);
                }
            }
        }
        Ok(moved)
    }

    async fn purge(&self, topic: &str, group: &str) -> Result<usize> {
        Ok(self.group(topic, group).map_or(0, |q| q.purge_dead()))
    }
}
