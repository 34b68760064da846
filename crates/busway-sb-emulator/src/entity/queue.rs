//! State of one receivable entity: a queue or a subscription, with its dead-letter sub-queue and
//! sessions.

use std::collections::{BTreeMap, HashMap};

use crate::{
    config::EntityProperties,
    entity::{
        OpError,
        message::{Lock, LockOwner, MessageState, StoredMessage},
    },
    filter::CompiledFilter,
};

/// Which sub-queue of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SubQueue {
    Active,
    DeadLetter,
}

/// A named subscription rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    pub source: crate::config::RuleFilter,
    pub filter: CompiledFilter,
    pub created_ms: i64,
}

/// A Service Bus session inside an entity.
#[derive(Debug, Default)]
pub(crate) struct SessionInfo {
    pub state: Option<Vec<u8>>,
    pub holder: Option<SessionHolder>,
}

/// The receive link holding a session lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionHolder {
    pub link: u64,
    pub until_ms: i64,
}

/// A queue or a subscription.
#[derive(Debug)]
pub(crate) struct QueueEntity {
    /// Display path (`queue` or `topic/Subscriptions/sub`).
    pub path: String,
    pub props: EntityProperties,
    /// Rules, for subscriptions only.
    pub rules: Option<Vec<Rule>>,
    pub active: BTreeMap<i64, StoredMessage>,
    pub dead_letter: BTreeMap<i64, StoredMessage>,
    pub sessions: HashMap<String, SessionInfo>,
    /// Bytes held in both sub-queues (quota accounting).
    pub bytes: usize,
}

/// What to do with a message whose delivery attempt ended without completion.
pub(crate) enum Release {
    /// Back to the queue without counting a delivery (credit probe, `Released` outcome).
    Uncounted,
    /// Counted as a failed delivery (abandon, lock expiry).
    Counted,
}

impl QueueEntity {
    pub fn new(path: String, props: EntityProperties, rules: Option<Vec<Rule>>) -> Self {
        Self {
            path,
            props,
            rules,
            active: BTreeMap::new(),
            dead_letter: BTreeMap::new(),
            sessions: HashMap::new(),
            bytes: 0,
        }
    }

    pub fn store(&self, sub: SubQueue) -> &BTreeMap<i64, StoredMessage> {
        match sub {
            SubQueue::Active => &self.active,
            SubQueue::DeadLetter => &self.dead_letter,
        }
    }

    pub fn store_mut(&mut self, sub: SubQueue) -> &mut BTreeMap<i64, StoredMessage> {
        match sub {
            SubQueue::Active => &mut self.active,
            SubQueue::DeadLetter => &mut self.dead_letter,
        }
    }

    pub fn message_count(&self) -> usize {
        self.active.len() + self.dead_letter.len()
    }

    pub fn insert(&mut self, sub: SubQueue, message: StoredMessage) {
        self.bytes += message.size;
        if let Some(old) = self.store_mut(sub).insert(message.seq, message) {
            self.bytes = self.bytes.saturating_sub(old.size);
        }
    }

    pub fn remove(&mut self, sub: SubQueue, seq: i64) -> Option<StoredMessage> {
        let message = self.store_mut(sub).remove(&seq)?;
        self.bytes = self.bytes.saturating_sub(message.size);
        Some(message)
    }

    /// Lowest-sequence available message, optionally restricted to one session.
    pub fn next_available(&self, sub: SubQueue, session: Option<&str>, now_ms: i64) -> Option<i64> {
        self.store(sub)
            .values()
            .find(|m| {
                m.is_available(now_ms)
                    && match session {
                        Some(id) => m.session_id.as_deref() == Some(id),
                        None => true,
                    }
            })
            .map(|m| m.seq)
    }

    /// Locks a message for a receive link (the caller records the token globally).
    pub fn lock(&mut self, sub: SubQueue, seq: i64, lock: Lock) -> Option<&StoredMessage> {
        let message = self.store_mut(sub).get_mut(&seq)?;
        message.lock = Some(lock);
        Some(message)
    }

    /// Whether `link` currently holds the lock on session `id`.
    pub fn session_held_by(&self, id: &str, link: u64, now_ms: i64) -> bool {
        self.sessions
            .get(id)
            .and_then(|s| s.holder)
            .is_some_and(|h| h.link == link && h.until_ms > now_ms)
    }

    /// Whether session `id` is locked by anyone.
    pub fn session_locked(&self, id: &str, now_ms: i64) -> bool {
        self.sessions
            .get(id)
            .and_then(|s| s.holder)
            .is_some_and(|h| h.until_ms > now_ms)
    }

    /// The unlocked session whose oldest available message is the oldest, for "next available".
    pub fn next_free_session(&self, now_ms: i64) -> Option<String> {
        self.active
            .values()
            .filter(|m| m.is_available(now_ms))
            .filter_map(|m| m.session_id.as_deref())
            .find(|id| !self.session_locked(id, now_ms))
            .map(str::to_string)
    }

    /// Takes the session lock for `link`.
    pub fn lock_session(&mut self, id: &str, link: u64, until_ms: i64) {
        self.sessions.entry(id.to_string()).or_default().holder =
            Some(SessionHolder { link, until_ms });
    }

    /// Checks that a session's lock is live, for management operations on it.
    pub fn live_session(&mut self, id: &str, now_ms: i64) -> Result<&mut SessionInfo, OpError> {
        match self.sessions.get_mut(id) {
            Some(info) if info.holder.is_some_and(|h| h.until_ms > now_ms) => Ok(info),
            _ => Err(OpError::session_lock_lost(id)),
        }
    }

    /// Takes a message back from whoever held its lock.
    ///
    /// Returns the message when a counted release pushed it over MaxDeliveryCount: the caller
    /// dead-letters it (it has already been removed from the active queue).
    pub fn release(&mut self, sub: SubQueue, seq: i64, how: Release) -> Option<StoredMessage> {
        let max = self.props.max_delivery_count;
        let message = self.store_mut(sub).get_mut(&seq)?;
        let was_delivered = message.lock.take().is_some_and(|l| l.delivered);
        if matches!(how, Release::Counted) && was_delivered {
            message.delivery_count += 1;
            if sub == SubQueue::Active && message.delivery_count >= max {
                return self.remove(sub, seq);
            }
        }
        None
    }

    /// Sequence numbers of messages locked by `owner` in session `id` (or in any session).
    pub fn locked_by(&self, owner: LockOwner) -> Vec<(SubQueue, i64, [u8; 16])> {
        [SubQueue::Active, SubQueue::DeadLetter]
            .into_iter()
            .flat_map(|sub| {
                self.store(sub).values().filter_map(move |m| {
                    m.lock
                        .filter(|l| l.owner == owner)
                        .map(|l| (sub, m.seq, l.token))
                })
            })
            .collect()
    }

    /// Messages whose time has come: scheduled ones become active. Returns whether anything changed.
    pub fn activate_scheduled(&mut self, now_ms: i64) -> bool {
        let mut changed = false;
        for message in self.active.values_mut() {
            if message.state == MessageState::Scheduled
                && message.scheduled_ms.is_some_and(|t| t <= now_ms)
            {
                message.state = MessageState::Active;
                message.enqueued_ms = message.scheduled_ms.unwrap_or(now_ms);
                changed = true;
            }
        }
        changed
    }

    /// Removes expired, unlocked messages from the active queue and returns them.
    pub fn take_expired(&mut self, now_ms: i64) -> Vec<StoredMessage> {
        let expired: Vec<i64> = self
            .active
            .values()
            .filter(|m| {
                m.lock.is_none()
                    && m.state != MessageState::Scheduled
                    && m.expires_ms.is_some_and(|e| e <= now_ms)
            })
            .map(|m| m.seq)
            .collect();
        expired
            .into_iter()
            .filter_map(|seq| self.remove(SubQueue::Active, seq))
            .collect()
    }

    /// Session locks that ran out: the sessions become free again.
    pub fn expire_sessions(&mut self, now_ms: i64) -> Vec<(String, u64)> {
        let mut expired = Vec::new();
        for (id, info) in &mut self.sessions {
            if let Some(holder) = info.holder
                && holder.until_ms <= now_ms
            {
                info.holder = None;
                expired.push((id.clone(), holder.link));
            }
        }
        self.sessions
            .retain(|_, info| info.holder.is_some() || info.state.is_some());
        expired
    }
}
