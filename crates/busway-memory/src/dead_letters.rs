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
        // One at a time, room first: a dead letter leaves its queue only once its slot is
        // held, so a redrive that fails (or is dropped) while waiting for room loses nothing.
        let mut moved = 0;
        while limit.is_none_or(|l| moved < l) && queue.dead_depth() > 0 {
            let slot = self.reserve(&queue).await?;
            let Some(letter) = queue.take_dead(1).pop() else {
                break;
            };
            queue.push(Entry::new(letter.message, slot));
            moved += 1;
        }
        Ok(moved)
    }

    async fn purge(&self, topic: &str, group: &str) -> Result<usize> {
        Ok(self.group(topic, group).map_or(0, |q| q.purge_dead()))
    }
}
