//! Records of processed message ids, so a redelivered or re-published message has its side
//! effect once.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::Result;

/// What [`IdempotencyStore::begin`] found for a message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not seen: the caller now holds it and must `complete` or `abandon` it.
    Acquired,
    /// Already processed: skip it.
    AlreadyDone,
    /// Being processed by someone else right now: try again later.
    InProgress,
}

/// Where processed message ids are kept, per consumer group.
///
/// `begin` must be atomic: of two concurrent callers with the same key, one gets
/// [`Claim::Acquired`] and the other [`Claim::InProgress`].
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for processing in `group`.
    async fn begin(&self, group: &str, key: &str) -> Result<Claim>;
    /// Marks the claimed key as processed.
    async fn complete(&self, group: &str, key: &str) -> Result<()>;
    /// Releases the claim after a failure, so a later delivery may process it.
    async fn abandon(&self, group: &str, key: &str) -> Result<()>;
}

#[derive(Clone, Copy)]
enum State {
    InProgress { lease_until: Instant },
    Done { until: Instant },
}

#[derive(Default)]
struct Entries {
    map: HashMap<(String, String), State>,
    /// Insertion order, for evicting the oldest when full.
    order: VecDeque<(String, String)>,
}

/// A bounded in-memory [`IdempotencyStore`] with a time to live.
///
/// Holds at most `capacity` ids; beyond that the oldest are forgotten first. Processed ids are
/// remembered for `ttl`; a claim whose holder crashed expires after `lease`. Good for one
/// process; use a shared store (Redis, Postgres) when consumers of a group run in several.
pub struct MemoryIdempotencyStore {
    capacity: usize,
    ttl: Duration,
    lease: Duration,
    entries: Mutex<Entries>,
}

impl MemoryIdempotencyStore {
    /// A store for `capacity` ids remembered for `ttl`, with a 5-minute processing lease.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            lease: Duration::from_secs(300),
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Sets how long an unfinished claim blocks others.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A poisoned lock only means another thread panicked mid-update of plain data; the
        // map is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for MemoryIdempotencyStore {
    fn default() -> Self {
        Self::new(100_000, Duration::from_secs(24 * 3600))
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn begin(&self, group: &str, key: &str) -> Result<Claim> {
        let now = Instant::now();
        let k = (group.to_owned(), key.to_owned());
        let mut e = self.lock();
        match e.map.get(&k) {
            Some(State::Done { until }) if *until > now => return Ok(Claim::AlreadyDone),
            Some(State::InProgress { lease_until }) if *lease_until > now => {
                return Ok(Claim::InProgress);
            }
            _ => {}
        }
        let fresh = e
            .map
            .insert(
                k.clone(),
                State::InProgress {
                    lease_until: now + self.lease,
                },
            )
            .is_none();
        if fresh {
            e.order.push_back(k);
        }
        while e.map.len() > self.capacity {
            let Some(oldest) = e.order.pop_front() else {
                break;
            };
            e.map.remove(&oldest);
        }
        Ok(Claim::Acquired)
    }

    async fn complete(&self, group: &str, key: &str) -> Result<()> {
        let until = Instant::now() + self.ttl;
        let mut e = self.lock();
        if let Some(state) = e.map.get_mut(&(group.to_owned(), key.to_owned())) {
            *state = State::Done { until };
        }
        Ok(())
    }

    async fn abandon(&self, group: &str, key: &str) -> Result<()> {
        let mut e = self.lock();
        let k = (group.to_owned(), key.to_owned());
        e.map.remove(&k);
        e.order.retain(|o| o != &k);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn claims_are_exclusive_then_remembered_until_ttl() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60));
        assert_eq!(store.begin("g", "a").await.unwrap(), Claim::Acquired);
        assert_eq!(store.begin("g", "a").await.unwrap(), Claim::InProgress);
        assert_eq!(store.begin("other", "a").await.unwrap(), Claim::Acquired);
        store.complete("g", "a").await.unwrap();
        assert_eq!(store.begin("g", "a").await.unwrap(), Claim::AlreadyDone);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(store.begin("g", "a").await.unwrap(), Claim::Acquired);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_and_expired_claims_free_the_key() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60))
            .with_lease(Duration::from_secs(5));
        assert_eq!(store.begin("g", "a").await.unwrap(), Claim::Acquired);
        store.abandon("g", "a").await.unwrap();
        assert_eq!(store.begin("g", "a").await.unwrap(), Claim::Acquired);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(store.begin("g", "a").await.unwrap(), Claim::Acquired);
    }

    #[tokio::test]
    async fn capacity_bounds_memory() {
        let store = MemoryIdempotencyStore::new(3, Duration::from_secs(60));
        for i in 0..10 {
            store.begin("g", &i.to_string()).await.unwrap();
            store.complete("g", &i.to_string()).await.unwrap();
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.begin("g", "9").await.unwrap(), Claim::AlreadyDone);
        assert_eq!(store.begin("g", "0").await.unwrap(), Claim::Acquired);
    }
}
