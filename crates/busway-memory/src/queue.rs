//! One group's queue: ready, delayed and in-flight messages, its dead letters, and the
//! settlement handle of its deliveries.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use busway_core::{
    DeadLetter, Delivery, DeliveryInfo, Error, Message, Result, Settle, Settlement, Subscription,
};
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A message held by a group, with the slot it occupies in the group's capacity.
pub(crate) struct Entry {
    pub(crate) message: Message,
    pub(crate) deliveries: u32,
    pub(crate) first_failure: Option<DateTime<Utc>>,
    pub(crate) _slot: OwnedSemaphorePermit,
}

impl Entry {
    /// A message not yet delivered, holding `slot`.
    pub(crate) fn new(message: Message, slot: OwnedSemaphorePermit) -> Self {
        Self {
            message,
            deliveries: 0,
            first_failure: None,
            _slot: slot,
        }
    }
}

struct Delayed {
    due: Instant,
    seq: u64,
    entry: Entry,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
struct State {
    ready: VecDeque<Entry>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    next_seq: u64,
    dead: VecDeque<DeadLetter>,
    /// For ordered groups: the one subscription allowed to receive (single active consumer).
    active: Option<u64>,
}

impl State {
    fn promote_due(&mut self, now: Instant) {
        while self.delayed.peek().is_some_and(|d| d.0.due <= now) {
            if let Some(Reverse(d)) = self.delayed.pop() {
                self.ready.push_back(d.entry);
            }
        }
    }
}

/// Faults a test asked the broker to inject, shared by every group.
#[derive(Default)]
pub(crate) struct Faults {
    /// Groups whose dead letters are refused, as (topic, group).
    pub(crate) refused_dead_letters: Mutex<std::collections::HashSet<(String, String)>>,
}

impl Faults {
    fn refuses_dead_letters(&self, topic: &str, group: &str) -> bool {
        self.refused_dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(topic.to_owned(), group.to_owned()))
    }
}

pub(crate) struct GroupQueue {
    pub(crate) topic: String,
    pub(crate) group: String,
    pub(crate) ordered: bool,
    pub(crate) slots: Arc<Semaphore>,
    dead_letter_capacity: usize,
    faults: Arc<Faults>,
    state: Mutex<State>,
    changed: Notify,
    next_subscription: AtomicU64,
}

impl GroupQueue {
    pub(crate) fn new(
        topic: &str,
        group: &str,
        ordered: bool,
        capacity: usize,
        dead_letter_capacity: usize,
        faults: Arc<Faults>,
    ) -> Arc<Self> {
        Arc::new(Self {
            topic: topic.to_owned(),
            group: group.to_owned(),
            ordered,
            slots: Arc::new(Semaphore::new(capacity)),
            dead_letter_capacity,
            faults,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            next_subscription: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, entry: Entry) {
        self.lock().ready.push_back(entry);
        self.changed.notify_waiters();
    }

    fn push_front(&self, entry: Entry) {
        self.lock().ready.push_front(entry);
        self.changed.notify_waiters();
    }

    pub(crate) fn delay(&self, entry: Entry, due: Instant) {
        let mut state = self.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        state.delayed.push(Reverse(Delayed { due, seq, entry }));
        drop(state);
        self.changed.notify_waiters();
    }

    /// Messages waiting (ready or delayed), not counting those in flight.
    pub(crate) fn depth(&self) -> usize {
        let state = self.lock();
        state.ready.len() + state.delayed.len()
    }

    pub(crate) fn dead_depth(&self) -> usize {
        self.lock().dead.len()
    }

    pub(crate) fn peek_dead(&self, limit: usize) -> Vec<DeadLetter> {
        self.lock().dead.iter().take(limit).cloned().collect()
    }

    pub(crate) fn take_dead(&self, limit: usize) -> Vec<DeadLetter> {
        let mut state = self.lock();
        let n = limit.min(state.dead.len());
        state.dead.drain(..n).collect()
    }

    pub(crate) fn purge_dead(&self) -> usize {
        let mut state = self.lock();
        let n = state.dead.len();
        state.dead.clear();
        n
    }

    pub(crate) fn subscribe(self: &Arc<Self>) -> MemorySubscription {
        MemorySubscription {
            queue: self.clone(),
            id: self.next_subscription.fetch_add(1, AtomicOrdering::Relaxed),
            closed: false,
        }
    }
}

/// One member's view of a group queue.
pub(crate) struct MemorySubscription {
    queue: Arc<GroupQueue>,
    id: u64,
    closed: bool,
}

enum Poll {
    Ready(Box<Entry>),
    WaitUntil(Option<Instant>),
}

impl MemorySubscription {
    fn try_take(&self) -> Poll {
        let mut state = self.queue.lock();
        if self.queue.ordered {
            match state.active {
                Some(active) if active != self.id => return Poll::WaitUntil(None),
                _ => state.active = Some(self.id),
            }
        }
        state.promote_due(Instant::now());
        match state.ready.pop_front() {
            Some(entry) => Poll::Ready(Box::new(entry)),
            None => Poll::WaitUntil(state.delayed.peek().map(|d| d.0.due)),
        }
    }

    fn release_active(&self) {
        let mut state = self.queue.lock();
        if state.active == Some(self.id) {
            state.active = None;
            drop(state);
            self.queue.changed.notify_waiters();
        }
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.release_active();
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if self.closed {
                return None;
            }
            let changed = self.queue.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.try_take() {
                Poll::Ready(mut entry) => {
                    entry.deliveries += 1;
                    let info = DeliveryInfo {
                        first_failure: entry.first_failure,
                        ..DeliveryInfo::new(&self.queue.topic, &self.queue.group, entry.deliveries)
                    };
                    let message = entry.message.clone();
                    let settle = MemorySettle {
                        queue: self.queue.clone(),
                        entry: Some(entry),
                    };
                    return Some(Ok(Delivery::new(message, info, Box::new(settle))));
                }
                Poll::WaitUntil(Some(due)) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                Poll::WaitUntil(None) => changed.await,
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        // Nothing is prefetched: deliveries are taken on demand.
        self.closed = true;
        self.release_active();
        Ok(())
    }
}

/// Settles one delivery; dropping it unsettled puts the message back at the head of the queue,
/// its delivery already counted.
struct MemorySettle {
    queue: Arc<GroupQueue>,
    entry: Option<Box<Entry>>,
}

#[async_trait]
impl Settle for MemorySettle {
    async fn settle(&mut self, settlement: &Settlement) -> Result<()> {
        let Some(mut entry) = self.entry.take() else {
            return Ok(());
        };
        match settlement {
            Settlement::Ack => {}
            Settlement::Redeliver {
                delay,
                first_failure,
            } => {
                entry.first_failure = Some(*first_failure);
                if delay.is_zero() {
                    self.queue.push_front(*entry);
                } else {
                    self.queue.delay(*entry, Instant::now() + *delay);
                }
            }
            Settlement::DeadLetter(metadata) => {
                if self
                    .queue
                    .faults
                    .refuses_dead_letters(&self.queue.topic, &self.queue.group)
                {
                    self.entry = Some(entry);
                    return Err(Error::Rejected(format!(
                        "dead letters of {}/{} are refused (a fault injected by a test)",
                        self.queue.topic, self.queue.group
                    )));
                }
                let mut state = self.queue.lock();
                if state.dead.len() >= self.queue.dead_letter_capacity {
                    drop(state);
                    // Still ours: the runtime decides what happens to it next.
                    self.entry = Some(entry);
                    return Err(Error::Rejected(format!(
                        "dead-letter queue of {}/{} is full ({} messages)",
                        self.queue.topic, self.queue.group, self.queue.dead_letter_capacity
                    )));
                }
                state.dead.push_back(DeadLetter {
                    message: entry.message.clone(),
                    metadata: Some((**metadata).clone()),
                });
            }
        }
        Ok(())
    }
}

impl Drop for MemorySettle {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            // Unsettled: the consumer went away. Give it back, as a broker does on disconnect.
            self.queue.push_front(*entry);
        }
    }
}
