//! The in-memory namespace: entities, routing, locks, sessions and the timers that drive them.
//!
//! All state sits behind one mutex. The emulator serves tests, not production traffic, and a
//! single lock makes every Service Bus rule that spans entities (fan-out, forwarding,
//! dead-lettering, quota checks on several subscriptions) atomic without further thought. The lock
//! is never held across an `.await`. Link tasks learn about changes through a `watch` counter.

pub(crate) mod message;
pub(crate) mod queue;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fe2o3_amqp_types::messaging::MessageId;
use tokio::sync::watch;

use crate::{
    config::{
        DuplicateDetection, NamespaceConfig, QueueConfig, RuleConfig, RuleFilter, TopicConfig,
    },
    error::ConfigError,
    filter::CompiledFilter,
};

use self::{
    message::{
        AmqpMessage, DEAD_LETTER_DESCRIPTION, DEAD_LETTER_REASON, Lock, LockOwner, MessageState,
        SCHEDULED_ENQUEUE_TIME, StoredMessage, annotation, encode, message_id_string,
    },
    queue::{QueueEntity, Release, Rule, SubQueue},
};

/// Storage limits applied to every entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes (Service Bus standard tier and the official emulator: 256 KB).
    pub max_message_bytes: usize,
    /// Bytes an entity (active + dead-letter messages) may hold before sends fail with QuotaExceeded.
    pub max_entity_bytes: usize,
    /// Messages an entity (active + dead-letter) may hold before sends fail with QuotaExceeded.
    pub max_entity_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            max_entity_bytes: 100 * 1024 * 1024,
            max_entity_messages: 100_000,
        }
    }
}

/// Forwarding chains longer than this are cut, as Service Bus limits auto-forward hops to 4.
const MAX_FORWARD_HOPS: u8 = 4;

/// A failure reported to the client: a `$management` status or an AMQP error condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpError {
    pub status: u16,
    pub condition: &'static str,
    pub description: String,
}

impl OpError {
    fn new(status: u16, condition: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            condition,
            description: description.into(),
        }
    }
    pub fn lock_lost() -> Self {
        Self::new(
            410,
            "com.microsoft:message-lock-lost",
            "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
        )
    }
    pub fn session_lock_lost(id: &str) -> Self {
        Self::new(
            410,
            "com.microsoft:session-lock-lost",
            format!("The session lock has expired on the session '{id}'."),
        )
    }
    pub fn session_cannot_be_locked(id: &str) -> Self {
        Self::new(
            410,
            "com.microsoft:session-cannot-be-locked",
            format!(
                "The requested session '{id}' cannot be accepted. It may be locked by another receiver."
            ),
        )
    }
    pub fn no_session_available() -> Self {
        Self::new(
            408,
            "com.microsoft:timeout",
            "No session available to complete the request.",
        )
    }
    pub fn message_not_found(seq: i64) -> Self {
        Self::new(
            404,
            "com.microsoft:message-not-found",
            format!(
                "Failed to retrieve message with sequence number {seq}. The message may not exist or may not be in the expected state."
            ),
        )
    }
    pub fn entity_not_found(path: &str) -> Self {
        Self::new(
            404,
            "amqp:not-found",
            format!("The messaging entity '{path}' could not be found."),
        )
    }
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(400, "com.microsoft:argument-error", description)
    }
    pub fn not_allowed(description: impl Into<String>) -> Self {
        Self::new(400, "amqp:not-allowed", description)
    }
    pub fn conflict(description: impl Into<String>) -> Self {
        Self::new(409, "com.microsoft:entity-already-exists", description)
    }
    pub fn quota_exceeded(path: &str) -> Self {
        Self::new(
            403,
            "amqp:resource-limit-exceeded",
            format!("The maximum entity size has been reached or exceeded for '{path}'."),
        )
    }
    pub fn message_too_large(size: usize, max: usize) -> Self {
        Self::new(
            413,
            "amqp:link:message-size-exceeded",
            format!("The received message (size {size} bytes) exceeds the limit ({max} bytes)."),
        )
    }
    pub fn unauthorized(description: impl Into<String>) -> Self {
        Self::new(401, "amqp:unauthorized-access", description)
    }
}

/// Where a sender's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Queue(String),
    Topic(String),
}

/// Where a receiver reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub key: String,
    pub sub: SubQueue,
    pub requires_session: bool,
}

/// A message taken for a receive link.
pub(crate) enum Acquired {
    Message {
        token: [u8; 16],
        seq: i64,
        message: Box<AmqpMessage>,
    },
    Empty,
    SessionLost,
}

/// A lock token with the encoded message it locks (`receive-by-sequence-number`).
pub(crate) type LockedBytes = ([u8; 16], Vec<u8>);

/// How a receiver settled a locked message.
#[derive(Debug, Clone)]
pub(crate) enum Disposition {
    Complete,
    Abandon(Vec<(String, fe2o3_amqp_types::primitives::Value)>),
    Defer(Vec<(String, fe2o3_amqp_types::primitives::Value)>),
    DeadLetter {
        reason: Option<String>,
        description: Option<String>,
        properties: Vec<(String, fe2o3_amqp_types::primitives::Value)>,
    },
    Release,
}

/// Duplicate detection history of a queue or topic.
#[derive(Debug, Default)]
struct Dedup {
    config: DuplicateDetection,
    seen: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl Dedup {
    /// Records `id`; false when it was already seen inside the window.
    fn admit(&mut self, id: &str, now_ms: i64) -> bool {
        if !self.config.enabled {
            return true;
        }
        self.purge(now_ms);
        if self.seen.contains_key(id) {
            return false;
        }
        self.seen.insert(id.to_string(), now_ms);
        self.order.push_back((now_ms, id.to_string()));
        true
    }

    fn purge(&mut self, now_ms: i64) {
        let window = duration_ms(self.config.window);
        while let Some((at, _)) = self.order.front() {
            if now_ms - at < window {
                break;
            }
            if let Some((at, id)) = self.order.pop_front()
                && self.seen.get(&id) == Some(&at)
            {
                self.seen.remove(&id);
            }
        }
    }
}

/// The sending side of a queue or topic: sequence numbers and duplicate detection.
#[derive(Debug, Default)]
struct SendSide {
    next_seq: i64,
    dedup: Dedup,
}

impl SendSide {
    fn new(config: DuplicateDetection) -> Self {
        Self {
            next_seq: 1,
            dedup: Dedup {
                config,
                ..Dedup::default()
            },
        }
    }
    fn take_seq(&mut self) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

#[derive(Debug)]
struct TopicEntity {
    default_ttl: Option<Duration>,
    subscriptions: Vec<String>,
    /// Scheduled messages wait at the topic and fan out when due.
    scheduled: BTreeMap<i64, StoredMessage>,
}

#[derive(Debug, Clone)]
struct LockRef {
    key: String,
    sub: SubQueue,
    seq: i64,
}

#[derive(Debug, Default)]
struct State {
    limits: Limits,
    queues: HashMap<String, QueueEntity>,
    topics: HashMap<String, TopicEntity>,
    send_sides: HashMap<String, SendSide>,
    locks: HashMap<[u8; 16], LockRef>,
}

/// The broker shared by every connection.
#[derive(Debug)]
pub(crate) struct Broker {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    limits: Limits,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Lower-case entity key of a path (Service Bus entity names are case-insensitive).
pub(crate) fn entity_key(path: &str) -> String {
    path.trim_matches('/').to_ascii_lowercase()
}

/// Strips `amqp://host[:port]/` from a link address, leaving the entity path.
pub(crate) fn address_path(address: &str) -> &str {
    let path = match address.find("://") {
        Some(i) => {
            let rest = &address[i + 3..];
            rest.find('/').map_or("", |j| &rest[j + 1..])
        }
        None => address,
    };
    path.trim_matches('/')
}

fn new_token() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

impl Broker {
    /// Builds the namespace from its configuration.
    pub fn new(config: &NamespaceConfig, limits: Limits) -> Result<Self, ConfigError> {
        let mut state = State {
            limits,
            ..State::default()
        };
        for queue in &config.queues {
            add_queue(&mut state, queue)?;
        }
        for topic in &config.topics {
            add_topic(&mut state, topic)?;
        }
        // Forwarding targets must exist (Service Bus refuses to create such an entity).
        for queue in state.queues.values() {
            for target in [
                &queue.props.forward_to,
                &queue.props.forward_dead_lettered_messages_to,
            ]
            .into_iter()
            .flatten()
            {
                let key = entity_key(target);
                if !state.queues.contains_key(&key) && !state.topics.contains_key(&key)
                    || key.contains("/subscriptions/")
                {
                    return Err(ConfigError::Entity {
                        name: queue.path.clone(),
                        reason: format!("forwarding target {target:?} is not a queue or topic"),
                    });
                }
            }
        }
        let (changed, _) = watch::channel(0);
        Ok(Self {
            state: Mutex::new(state),
            changed,
            limits,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave state half-updated in a way that matters
        // more than stopping the emulator would, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The storage limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Subscribes to "something changed" notifications.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Resolves a sender's target path.
    pub fn send_target(&self, path: &str) -> Option<Target> {
        let key = entity_key(path);
        let state = self.lock();
        if state.queues.contains_key(&key) && !key.contains("/subscriptions/") {
            Some(Target::Queue(key))
        } else if state.topics.contains_key(&key) {
            Some(Target::Topic(key))
        } else {
            None
        }
    }

    /// Resolves a receiver's source path (queue, subscription, or their `$DeadLetterQueue`).
    pub fn receive_source(&self, path: &str) -> Option<Source> {
        let key = entity_key(path);
        let (key, sub) = match key.strip_suffix("/$deadletterqueue") {
            Some(base) => (base.to_string(), SubQueue::DeadLetter),
            None => (key, SubQueue::Active),
        };
        let state = self.lock();
        let queue = state.queues.get(&key)?;
        Some(Source {
            requires_session: sub == SubQueue::Active && queue.props.requires_session,
            key,
            sub,
        })
    }

    /// Whether the path names a subscription (rule operations are only valid there).
    pub fn is_subscription(&self, source: &Source) -> bool {
        self.lock()
            .queues
            .get(&source.key)
            .is_some_and(|q| q.rules.is_some())
    }

    /// Accepts messages from a sender link (one transfer, possibly a batch).
    pub fn send(&self, target: &Target, messages: Vec<AmqpMessage>) -> Result<(), OpError> {
        let now = now_ms();
        let mut state = self.lock();
        for message in &messages {
            let size = encode(message.clone()).len();
            if size > self.limits.max_message_bytes {
                return Err(OpError::message_too_large(
                    size,
                    self.limits.max_message_bytes,
                ));
            }
        }
        state.check_quota(target, messages.len(), &self.limits)?;
        for message in messages {
            let scheduled = scheduled_time(&message).filter(|t| *t > now);
            state.accept_new(target, message, now, scheduled, true, &self.limits)?;
        }
        drop(state);
        self.notify();
        Ok(())
    }

    /// `schedule-message`: returns the sequence numbers assigned.
    pub fn schedule(
        &self,
        target: &Target,
        messages: Vec<AmqpMessage>,
    ) -> Result<Vec<i64>, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        state.check_quota(target, messages.len(), &self.limits)?;
        let mut seqs = Vec::with_capacity(messages.len());
        for message in messages {
            let at = scheduled_time(&message).unwrap_or(now).max(now);
            let seq = state.accept_new(target, message, now, Some(at), false, &self.limits)?;
            seqs.push(seq.unwrap_or_default());
        }
        drop(state);
        self.notify();
        Ok(seqs)
    }

    /// `cancel-scheduled-message`.
    pub fn cancel_scheduled(&self, target: &Target, seqs: &[i64]) -> Result<(), OpError> {
        let mut state = self.lock();
        for &seq in seqs {
            let removed = match target {
                Target::Queue(key) => state.queues.get_mut(key).and_then(|q| {
                    let scheduled = q
                        .active
                        .get(&seq)
                        .is_some_and(|m| m.state == MessageState::Scheduled);
                    scheduled.then(|| q.remove(SubQueue::Active, seq)).flatten()
                }),
                Target::Topic(key) => state
                    .topics
                    .get_mut(key)
                    .and_then(|t| t.scheduled.remove(&seq)),
            };
            if removed.is_none() {
                return Err(OpError::message_not_found(seq));
            }
        }
        drop(state);
        self.notify();
        Ok(())
    }

    /// Takes the next available message for a receive link and locks it (not yet counted as a
    /// delivery until [`Broker::confirm_delivery`]).
    pub fn acquire(
        &self,
        source: &Source,
        link: u64,
        session: Option<&str>,
        receive_and_delete: bool,
    ) -> Acquired {
        let now = now_ms();
        let mut state = self.lock();
        let Some(queue) = state.queues.get_mut(&source.key) else {
            return Acquired::Empty;
        };
        if let Some(id) = session
            && !queue.session_held_by(id, link, now)
        {
            return Acquired::SessionLost;
        }
        let Some(seq) = queue.next_available(source.sub, session, now) else {
            return Acquired::Empty;
        };
        let until_ms = if session.is_some() {
            i64::MAX
        } else {
            now.saturating_add(duration_ms(queue.props.lock_duration))
        };
        let lock = Lock {
            token: new_token(),
            until_ms,
            owner: LockOwner::Link(link),
            delivered: false,
        };
        let Some(message) = queue.lock(source.sub, seq, lock) else {
            return Acquired::Empty;
        };
        tracing::trace!(entity = %source.key, seq, link, "acquired");
        let wire = message.to_wire(Some(&lock), !receive_and_delete);
        state.locks.insert(
            lock.token,
            LockRef {
                key: source.key.clone(),
                sub: source.sub,
                seq,
            },
        );
        Acquired::Message {
            token: lock.token,
            seq,
            message: Box::new(wire),
        }
    }

    /// Whether a message with a lower sequence number than `seq` is available to the receiver.
    pub fn available_before(&self, source: &Source, session: Option<&str>, seq: i64) -> bool {
        let now = now_ms();
        let state = self.lock();
        state
            .queues
            .get(&source.key)
            .and_then(|q| q.next_available(source.sub, session, now))
            .is_some_and(|first| first < seq)
    }

    /// The message taken by [`Broker::acquire`] reached the client.
    pub fn confirm_delivery(&self, token: &[u8; 16]) {
        let mut state = self.lock();
        if let Some(message) = state.locked_message(token)
            && let Some(lock) = &mut message.lock
        {
            lock.delivered = true;
        }
    }

    /// Undoes [`Broker::acquire`] when the link had no credit: no delivery happened.
    pub fn release_unsent(&self, token: &[u8; 16]) {
        let mut state = self.lock();
        if let Some(lock) = state.locks.remove(token)
            && let Some(queue) = state.queues.get_mut(&lock.key)
        {
            queue.release(lock.sub, lock.seq, Release::Uncounted);
        }
        drop(state);
        self.notify();
    }

    /// Settles a locked message (link disposition or `update-disposition`).
    ///
    /// `link` is the receive link settling it, or `None` for the management node.
    pub fn settle(
        &self,
        token: &[u8; 16],
        link: Option<u64>,
        disposition: Disposition,
    ) -> Result<(), OpError> {
        let now = now_ms();
        let mut state = self.lock();
        tracing::trace!(?disposition, ?link, "settle");
        let result = state.settle(token, link, disposition, now);
        drop(state);
        self.notify();
        result
    }

    /// `renew-lock`: extends each lock by the entity's lock duration.
    pub fn renew_locks(&self, tokens: &[[u8; 16]]) -> Result<Vec<i64>, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let mut expirations = Vec::with_capacity(tokens.len());
        for token in tokens {
            let lock_ref = state
                .locks
                .get(token)
                .cloned()
                .ok_or_else(OpError::lock_lost)?;
            let queue = state
                .queues
                .get_mut(&lock_ref.key)
                .ok_or_else(OpError::lock_lost)?;
            let duration = duration_ms(queue.props.lock_duration);
            let message = queue
                .store_mut(lock_ref.sub)
                .get_mut(&lock_ref.seq)
                .ok_or_else(OpError::lock_lost)?;
            let lock = message
                .lock
                .as_mut()
                .filter(|l| l.token == *token && l.until_ms > now)
                .ok_or_else(OpError::lock_lost)?;
            if lock.until_ms == i64::MAX {
                return Err(OpError::not_allowed(
                    "Message locks of session messages are renewed with the session lock.",
                ));
            }
            lock.until_ms = now + duration;
            expirations.push(lock.until_ms);
        }
        Ok(expirations)
    }

    /// `receive-by-sequence-number` for deferred messages.
    pub fn receive_deferred(
        &self,
        source: &Source,
        seqs: &[i64],
        receive_and_delete: bool,
        session: Option<&str>,
    ) -> Result<Vec<LockedBytes>, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        for &seq in seqs {
            let ok = queue.store(source.sub).get(&seq).is_some_and(|m| {
                m.state == MessageState::Deferred
                    && m.lock.is_none()
                    && session.is_none_or(|id| m.session_id.as_deref() == Some(id))
            });
            if !ok {
                return Err(OpError::message_not_found(seq));
            }
        }
        let until_ms = now.saturating_add(duration_ms(queue.props.lock_duration));
        let mut out = Vec::with_capacity(seqs.len());
        let mut new_locks = Vec::new();
        for &seq in seqs {
            let lock = Lock {
                token: new_token(),
                until_ms,
                owner: LockOwner::Management,
                delivered: true,
            };
            if receive_and_delete {
                if let Some(message) = queue.remove(source.sub, seq) {
                    out.push((
                        lock.token,
                        encode(message.to_wire(Some(&lock), !receive_and_delete)),
                    ));
                }
            } else if let Some(message) = queue.lock(source.sub, seq, lock) {
                out.push((
                    lock.token,
                    encode(message.to_wire(Some(&lock), !receive_and_delete)),
                ));
                new_locks.push((lock.token, seq));
            }
        }
        for (token, seq) in new_locks {
            state.locks.insert(
                token,
                LockRef {
                    key: source.key.clone(),
                    sub: source.sub,
                    seq,
                },
            );
        }
        drop(state);
        self.notify();
        Ok(out)
    }

    /// `peek-message`: messages from `from` on, in sequence order, whatever their state.
    pub fn peek(
        &self,
        source: &Source,
        from: i64,
        count: usize,
        session: Option<&str>,
    ) -> Vec<Vec<u8>> {
        let state = self.lock();
        let Some(queue) = state.queues.get(&source.key) else {
            return Vec::new();
        };
        queue
            .store(source.sub)
            .range(from..)
            .map(|(_, m)| m)
            .filter(|m| session.is_none_or(|id| m.session_id.as_deref() == Some(id)))
            .take(count)
            .map(|m| encode(m.to_wire(None, false)))
            .collect()
    }

    /// Locks a session for a receive link: the named one, or the next one with messages.
    pub fn accept_session(
        &self,
        source: &Source,
        requested: Option<&str>,
        link: u64,
    ) -> Result<(String, i64), OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        let id = match requested {
            Some(id) if queue.session_locked(id, now) => {
                return Err(OpError::session_cannot_be_locked(id));
            }
            Some(id) => id.to_string(),
            None => queue
                .next_free_session(now)
                .ok_or_else(OpError::no_session_available)?,
        };
        let until = now.saturating_add(duration_ms(queue.props.lock_duration));
        queue.lock_session(&id, link, until);
        Ok((id, until))
    }

    /// `renew-session-lock`.
    pub fn renew_session(&self, source: &Source, id: &str) -> Result<i64, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        let duration = duration_ms(queue.props.lock_duration);
        let info = queue.live_session(id, now)?;
        let until = now.saturating_add(duration);
        if let Some(holder) = &mut info.holder {
            holder.until_ms = until;
        }
        Ok(until)
    }

    /// `get-session-state`.
    pub fn session_state(&self, source: &Source, id: &str) -> Result<Option<Vec<u8>>, OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        Ok(queue.live_session(id, now)?.state.clone())
    }

    /// `set-session-state` (`None` clears it).
    pub fn set_session_state(
        &self,
        source: &Source,
        id: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), OpError> {
        let now = now_ms();
        let mut state = self.lock();
        let queue = state
            .queues
            .get_mut(&source.key)
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        queue.live_session(id, now)?.state = value;
        Ok(())
    }

    /// A receive link went away: its session locks are released at once and the session messages
    /// it held count as abandoned. Plain peek-lock locks stay until they expire.
    pub fn link_closed(&self, link: u64) {
        let now = now_ms();
        let mut state = self.lock();
        let keys: Vec<String> = state.queues.keys().cloned().collect();
        for key in keys {
            let mut to_release = Vec::new();
            if let Some(queue) = state.queues.get_mut(&key) {
                for info in queue.sessions.values_mut() {
                    if info.holder.is_some_and(|h| h.link == link) {
                        info.holder = None;
                    }
                }
                for (sub, seq, token) in queue.locked_by(LockOwner::Link(link)) {
                    let message = queue.store(sub).get(&seq);
                    let undelivered = message.and_then(|m| m.lock).is_some_and(|l| !l.delivered);
                    let in_session =
                        message.is_some_and(|m| m.lock.is_some_and(|l| l.until_ms == i64::MAX));
                    if undelivered || in_session {
                        to_release.push((sub, seq, token));
                    }
                }
            }
            for (sub, seq, token) in to_release {
                state.locks.remove(&token);
                state.release_counted(&key, sub, seq, now);
            }
        }
        drop(state);
        self.notify();
    }

    /// Rule operations on a subscription.
    pub fn add_rule(&self, source: &Source, rule: RuleConfig) -> Result<(), OpError> {
        let filter = CompiledFilter::compile(&rule.filter).map_err(OpError::bad_request)?;
        let mut state = self.lock();
        let rules = state
            .queues
            .get_mut(&source.key)
            .and_then(|q| q.rules.as_mut())
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        if rules
            .iter()
            .any(|r| r.name.eq_ignore_ascii_case(&rule.name))
        {
            return Err(OpError::conflict(format!(
                "The messaging entity '{}' already exists.",
                rule.name
            )));
        }
        rules.push(Rule {
            name: rule.name,
            source: rule.filter,
            filter,
            created_ms: now_ms(),
        });
        Ok(())
    }

    /// Removes a rule by name.
    pub fn remove_rule(&self, source: &Source, name: &str) -> Result<(), OpError> {
        let mut state = self.lock();
        let rules = state
            .queues
            .get_mut(&source.key)
            .and_then(|q| q.rules.as_mut())
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        let before = rules.len();
        rules.retain(|r| !r.name.eq_ignore_ascii_case(name));
        if rules.len() == before {
            return Err(OpError::new(
                404,
                "amqp:not-found",
                format!("The messaging entity '{name}' could not be found."),
            ));
        }
        Ok(())
    }

    /// The rules of a subscription.
    pub fn rules(&self, source: &Source) -> Result<Vec<(String, RuleFilter, i64)>, OpError> {
        let state = self.lock();
        let rules = state
            .queues
            .get(&source.key)
            .and_then(|q| q.rules.as_ref())
            .ok_or_else(|| OpError::entity_not_found(&source.key))?;
        Ok(rules
            .iter()
            .map(|r| (r.name.clone(), r.source.clone(), r.created_ms))
            .collect())
    }

    /// Timers: scheduled messages, TTL, lock and session expiry, duplicate-detection history.
    pub fn housekeeping(&self) {
        let now = now_ms();
        let mut state = self.lock();
        if state.housekeeping(now, &self.limits) {
            drop(state);
            self.notify();
        }
    }

    /// Number of messages in an entity's active and dead-letter queues (for tests and diagnostics).
    pub fn counts(&self, path: &str) -> Option<(usize, usize)> {
        let state = self.lock();
        state
            .queues
            .get(&entity_key(path))
            .map(|q| (q.active.len(), q.dead_letter.len()))
    }
}

fn add_queue(state: &mut State, queue: &QueueConfig) -> Result<(), ConfigError> {
    let key = entity_key(&queue.name);
    if key.is_empty() || state.queues.contains_key(&key) || state.topics.contains_key(&key) {
        return Err(ConfigError::Entity {
            name: queue.name.clone(),
            reason: "empty or duplicate name".into(),
        });
    }
    state.queues.insert(
        key.clone(),
        QueueEntity::new(queue.name.clone(), queue.properties.clone(), None),
    );
    state
        .send_sides
        .insert(key, SendSide::new(queue.duplicate_detection.clone()));
    Ok(())
}

fn add_topic(state: &mut State, topic: &TopicConfig) -> Result<(), ConfigError> {
    let key = entity_key(&topic.name);
    if key.is_empty() || state.queues.contains_key(&key) || state.topics.contains_key(&key) {
        return Err(ConfigError::Entity {
            name: topic.name.clone(),
            reason: "empty or duplicate name".into(),
        });
    }
    let mut subscriptions = Vec::new();
    for sub in &topic.subscriptions {
        let path = format!("{}/Subscriptions/{}", topic.name, sub.name);
        let sub_key = entity_key(&path);
        let configured = if sub.rules.is_empty() {
            vec![RuleConfig::sql("$Default", "1=1")]
        } else {
            sub.rules.clone()
        };
        let mut rules = Vec::new();
        for rule in configured {
            let filter =
                CompiledFilter::compile(&rule.filter).map_err(|reason| ConfigError::Entity {
                    name: format!("{path} rule {}", rule.name),
                    reason,
                })?;
            rules.push(Rule {
                name: rule.name,
                source: rule.filter,
                filter,
                created_ms: now_ms(),
            });
        }
        if state.queues.contains_key(&sub_key) {
            return Err(ConfigError::Entity {
                name: path,
                reason: "duplicate subscription".into(),
            });
        }
        state.queues.insert(
            sub_key.clone(),
            QueueEntity::new(path, sub.properties.clone(), Some(rules)),
        );
        subscriptions.push(sub_key);
    }
    state.topics.insert(
        key.clone(),
        TopicEntity {
            default_ttl: topic.default_message_ttl,
            subscriptions,
            scheduled: BTreeMap::new(),
        },
    );
    state
        .send_sides
        .insert(key, SendSide::new(topic.duplicate_detection.clone()));
    Ok(())
}

fn scheduled_time(message: &AmqpMessage) -> Option<i64> {
    match annotation(message, SCHEDULED_ENQUEUE_TIME)? {
        fe2o3_amqp_types::primitives::Value::Timestamp(t) => Some(t.milliseconds()),
        _ => None,
    }
}

impl State {
    fn locked_message(&mut self, token: &[u8; 16]) -> Option<&mut StoredMessage> {
        let lock_ref = self.locks.get(token)?.clone();
        self.queues
            .get_mut(&lock_ref.key)?
            .store_mut(lock_ref.sub)
            .get_mut(&lock_ref.seq)
    }

    /// Queues a batch would land in must have room for it (the send is all or nothing).
    fn check_quota(&self, target: &Target, count: usize, limits: &Limits) -> Result<(), OpError> {
        let keys: Vec<&String> = match target {
            Target::Queue(key) => vec![key],
            Target::Topic(key) => self
                .topics
                .get(key)
                .map(|t| t.subscriptions.iter().collect())
                .unwrap_or_default(),
        };
        for key in keys {
            if let Some(queue) = self.queues.get(key)
                && (queue.message_count() + count > limits.max_entity_messages
                    || queue.bytes >= limits.max_entity_bytes)
            {
                return Err(OpError::quota_exceeded(&queue.path));
            }
        }
        Ok(())
    }

    /// A message entering the namespace: duplicate detection, sequence number, scheduling.
    /// Returns the sequence number, or `None` when the message was a duplicate.
    fn accept_new(
        &mut self,
        target: &Target,
        mut message: AmqpMessage,
        now: i64,
        scheduled_ms: Option<i64>,
        deduplicate: bool,
        limits: &Limits,
    ) -> Result<Option<i64>, OpError> {
        let key = match target {
            Target::Queue(k) | Target::Topic(k) => k,
        };
        let message_id = message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.as_ref())
            .map(message_id_string);
        let side = self
            .send_sides
            .get_mut(key)
            .ok_or_else(|| OpError::entity_not_found(key))?;
        if deduplicate
            && let Some(id) = &message_id
            && !side.dedup.admit(id, now)
        {
            tracing::debug!(entity = %key, message_id = %id, "duplicate message dropped");
            return Ok(None);
        }
        if let Target::Queue(k) = target
            && let Some(queue) = self.queues.get(k)
        {
            let session = message
                .properties
                .as_ref()
                .and_then(|p| p.group_id.as_ref());
            if queue.props.requires_session && session.is_none() {
                return Err(OpError::not_allowed(format!(
                    "The SessionId was not set on a message, and it cannot be sent to the entity '{}'. Entities that have session support enabled can only receive messages that have a non-null SessionId.",
                    queue.path
                )));
            }
        }
        if message_id.is_none() {
            // Service Bus gives a message sent without MessageId one of its own (a GUID without
            // dashes); receivers and the official SDKs rely on every message having one.
            message
                .properties
                .get_or_insert_with(Default::default)
                .message_id = Some(MessageId::String(uuid::Uuid::new_v4().simple().to_string()));
        }
        let seq = side.take_seq();
        let size = encode(message.clone()).len();
        let stored = StoredMessage {
            seq,
            enqueue_seq: seq,
            session_id: message.properties.as_ref().and_then(|p| p.group_id.clone()),
            enqueued_ms: scheduled_ms.unwrap_or(now),
            state: if scheduled_ms.is_some() {
                MessageState::Scheduled
            } else {
                MessageState::Active
            },
            scheduled_ms,
            expires_ms: None,
            delivery_count: 0,
            lock: None,
            size,
            dead_letter_source: None,
            message,
        };
        match target {
            Target::Topic(topic) if scheduled_ms.is_some() => {
                if let Some(t) = self.topics.get_mut(topic) {
                    t.scheduled.insert(seq, stored);
                }
            }
            _ => self.deliver(target, stored, 0, now, limits)?,
        }
        Ok(Some(seq))
    }

    /// Routes a sequenced message into queues: directly, by fan-out, or by forwarding.
    fn deliver(
        &mut self,
        target: &Target,
        mut message: StoredMessage,
        hops: u8,
        now: i64,
        limits: &Limits,
    ) -> Result<(), OpError> {
        if hops > 0 {
            // A forwarded message is a new message in its destination.
            let key = match target {
                Target::Queue(k) | Target::Topic(k) => k,
            };
            if let Some(side) = self.send_sides.get_mut(key) {
                message.seq = side.take_seq();
            }
        }
        match target {
            Target::Queue(key) => self.deliver_to_queue(key, message, hops, now, limits),
            Target::Topic(key) => {
                let Some(topic) = self.topics.get(key) else {
                    return Err(OpError::entity_not_found(key));
                };
                if let Some(ttl) = topic.default_ttl {
                    let limit = message.enqueued_ms.saturating_add(duration_ms(ttl));
                    message.expires_ms = Some(message.expires_ms.map_or(limit, |e| e.min(limit)));
                }
                let matching: Vec<String> = topic
                    .subscriptions
                    .iter()
                    .filter(|sub| {
                        self.queues.get(*sub).is_some_and(|q| {
                            q.rules.as_ref().is_some_and(|rules| {
                                rules.iter().any(|r| r.filter.matches(&message.message))
                            })
                        })
                    })
                    .cloned()
                    .collect();
                for sub in matching {
                    self.deliver_to_queue(&sub, message.clone(), hops, now, limits)?;
                }
                Ok(())
            }
        }
    }

    fn deliver_to_queue(
        &mut self,
        key: &str,
        mut message: StoredMessage,
        hops: u8,
        now: i64,
        limits: &Limits,
    ) -> Result<(), OpError> {
        let queue = self
            .queues
            .get(key)
            .ok_or_else(|| OpError::entity_not_found(key))?;
        if let Some(forward) = queue.props.forward_to.clone()
            && hops < MAX_FORWARD_HOPS
        {
            let target = self
                .target_of(&forward)
                .ok_or_else(|| OpError::entity_not_found(&forward))?;
            return self.deliver(&target, message, hops + 1, now, limits);
        }
        if queue.message_count() >= limits.max_entity_messages
            || queue.bytes + message.size > limits.max_entity_bytes
        {
            return Err(OpError::quota_exceeded(&queue.path));
        }
        // TTL: the shorter of the message's own and the entity default, from enqueue time.
        let mut ttl = duration_ms(queue.props.default_message_ttl);
        if let Some(own) = message.message.header.as_ref().and_then(|h| h.ttl) {
            ttl = ttl.min(i64::from(own));
        }
        let limit = message.enqueued_ms.saturating_add(ttl);
        message.expires_ms = Some(message.expires_ms.map_or(limit, |e| e.min(limit)));
        if let Some(queue) = self.queues.get_mut(key) {
            queue.insert(SubQueue::Active, message);
        }
        Ok(())
    }

    fn target_of(&self, name: &str) -> Option<Target> {
        let key = entity_key(name);
        if self.topics.contains_key(&key) {
            Some(Target::Topic(key))
        } else if self.queues.contains_key(&key) {
            Some(Target::Queue(key))
        } else {
            None
        }
    }

    /// Moves a message (already removed from its queue) to the dead-letter queue, or to the
    /// entity named by ForwardDeadLetteredMessagesTo.
    fn dead_letter(
        &mut self,
        key: &str,
        mut message: StoredMessage,
        reason: Option<String>,
        description: Option<String>,
        now: i64,
        limits: &Limits,
    ) {
        message.lock = None;
        message.state = MessageState::Active;
        message.scheduled_ms = None;
        message.expires_ms = None;
        let mut props = Vec::new();
        if let Some(reason) = reason {
            props.push((
                DEAD_LETTER_REASON,
                fe2o3_amqp_types::primitives::Value::String(reason),
            ));
        }
        if let Some(description) = description {
            props.push((
                DEAD_LETTER_DESCRIPTION,
                fe2o3_amqp_types::primitives::Value::String(description),
            ));
        }
        message.modify_properties(props);
        let Some(queue) = self.queues.get(key) else {
            return;
        };
        if let Some(forward) = queue.props.forward_dead_lettered_messages_to.clone()
            && let Some(target) = self.target_of(&forward)
        {
            let mut forwarded = message.clone();
            forwarded.dead_letter_source = Some(queue.path.clone());
            match self.deliver(&target, forwarded, 1, now, limits) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(entity = key, error = %e.description, "dead-letter forwarding failed; keeping the message in the dead-letter queue")
                }
            }
        }
        if let Some(queue) = self.queues.get_mut(key) {
            queue.insert(SubQueue::DeadLetter, message);
        }
    }

    /// Counted release; dead-letters the message when it ran out of delivery attempts.
    fn release_counted(&mut self, key: &str, sub: SubQueue, seq: i64, now: i64) {
        let limits = self.limits;
        let Some(queue) = self.queues.get_mut(key) else {
            return;
        };
        let max = queue.props.max_delivery_count;
        if let Some(message) = queue.release(sub, seq, Release::Counted) {
            self.dead_letter(
                key,
                message,
                Some("MaxDeliveryCountExceeded".into()),
                Some(format!(
                    "Message could not be consumed after {max} delivery attempts."
                )),
                now,
                &limits,
            );
        }
    }

    fn settle(
        &mut self,
        token: &[u8; 16],
        link: Option<u64>,
        disposition: Disposition,
        now: i64,
    ) -> Result<(), OpError> {
        let lock_ref = self
            .locks
            .get(token)
            .cloned()
            .ok_or_else(OpError::lock_lost)?;
        let queue = self
            .queues
            .get_mut(&lock_ref.key)
            .ok_or_else(OpError::lock_lost)?;
        let message = queue
            .store(lock_ref.sub)
            .get(&lock_ref.seq)
            .ok_or_else(OpError::lock_lost)?;
        let lock = message
            .lock
            .filter(|l| l.token == *token && l.until_ms > now)
            .ok_or_else(OpError::lock_lost)?;
        if lock.until_ms == i64::MAX {
            // Session message: valid only while the session lock is held (by this link).
            let id = message.session_id.clone().unwrap_or_default();
            let held = match (link, lock.owner) {
                (Some(l), _) => queue.session_held_by(&id, l, now),
                (None, LockOwner::Link(l)) => queue.session_held_by(&id, l, now),
                (None, LockOwner::Management) => true,
            };
            if !held {
                return Err(OpError::session_lock_lost(&id));
            }
        }
        self.locks.remove(token);
        let limits = self.limits;
        let key = lock_ref.key.clone();
        let (sub, seq) = (lock_ref.sub, lock_ref.seq);
        let Some(queue) = self.queues.get_mut(&key) else {
            return Err(OpError::lock_lost());
        };
        match disposition {
            Disposition::Complete => {
                queue.remove(sub, seq);
            }
            Disposition::Release => {
                queue.release(sub, seq, Release::Uncounted);
            }
            Disposition::Abandon(props) => {
                if let Some(m) = queue.store_mut(sub).get_mut(&seq) {
                    m.modify_properties(props.iter().map(|(k, v)| (k.as_str(), v.clone())));
                }
                self.release_counted(&key, sub, seq, now);
            }
            Disposition::Defer(props) => {
                if let Some(m) = queue.store_mut(sub).get_mut(&seq) {
                    m.modify_properties(props.iter().map(|(k, v)| (k.as_str(), v.clone())));
                    m.lock = None;
                    m.state = MessageState::Deferred;
                }
            }
            Disposition::DeadLetter {
                reason,
                description,
                properties,
            } => {
                if let Some(mut m) = queue.remove(sub, seq) {
                    m.modify_properties(properties.iter().map(|(k, v)| (k.as_str(), v.clone())));
                    if sub == SubQueue::DeadLetter {
                        // Dead-lettering from the dead-letter queue leaves it there.
                        m.lock = None;
                        queue.insert(sub, m);
                    } else {
                        self.dead_letter(&key, m, reason, description, now, &limits);
                    }
                }
            }
        }
        Ok(())
    }

    fn housekeeping(&mut self, now: i64, limits: &Limits) -> bool {
        let mut changed = false;
        // Expired message locks.
        let expired: Vec<([u8; 16], LockRef)> = self
            .locks
            .iter()
            .filter(|(token, r)| {
                self.queues
                    .get(&r.key)
                    .and_then(|q| q.store(r.sub).get(&r.seq))
                    .and_then(|m| m.lock)
                    .is_none_or(|l| l.token != **token || l.until_ms <= now)
            })
            .map(|(t, r)| (*t, r.clone()))
            .collect();
        for (token, lock_ref) in expired {
            self.locks.remove(&token);
            let still_locked = self
                .queues
                .get(&lock_ref.key)
                .and_then(|q| q.store(lock_ref.sub).get(&lock_ref.seq))
                .and_then(|m| m.lock)
                .is_some_and(|l| l.token == token);
            if still_locked {
                self.release_counted(&lock_ref.key, lock_ref.sub, lock_ref.seq, now);
                changed = true;
            }
        }
        let keys: Vec<String> = self.queues.keys().cloned().collect();
        for key in keys {
            let Some(queue) = self.queues.get_mut(&key) else {
                continue;
            };
            changed |= queue.activate_scheduled(now);
            // Session locks that ran out free the session and its messages.
            let mut held = Vec::new();
            for (id, link) in queue.expire_sessions(now) {
                changed = true;
                held.extend(queue.locked_by(LockOwner::Link(link)).into_iter().filter(
                    |(sub, seq, _)| {
                        queue
                            .store(*sub)
                            .get(seq)
                            .is_some_and(|m| m.session_id.as_deref() == Some(id.as_str()))
                    },
                ));
            }
            for (sub, seq, token) in held {
                self.locks.remove(&token);
                self.release_counted(&key, sub, seq, now);
            }
            let Some(queue) = self.queues.get_mut(&key) else {
                continue;
            };
            let dead_letter_expired = queue.props.dead_lettering_on_message_expiration;
            let expired = queue.take_expired(now);
            for message in expired {
                changed = true;
                if dead_letter_expired {
                    self.dead_letter(
                        &key,
                        message,
                        Some("TTLExpiredException".into()),
                        Some("The message expired and was dead lettered.".into()),
                        now,
                        limits,
                    );
                }
            }
        }
        // Scheduled messages of topics fan out when due.
        let due: Vec<(String, StoredMessage)> = self
            .topics
            .iter_mut()
            .flat_map(|(key, topic)| {
                let ready: Vec<i64> = topic
                    .scheduled
                    .values()
                    .filter(|m| m.scheduled_ms.is_some_and(|t| t <= now))
                    .map(|m| m.seq)
                    .collect();
                ready
                    .into_iter()
                    .filter_map(|seq| topic.scheduled.remove(&seq))
                    .map(|m| (key.clone(), m))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (key, mut message) in due {
            changed = true;
            message.state = MessageState::Active;
            if let Err(e) = self.deliver(&Target::Topic(key.clone()), message, 0, now, limits) {
                tracing::warn!(topic = %key, error = %e.description, "scheduled message dropped");
            }
        }
        for side in self.send_sides.values_mut() {
            side.dedup.purge(now);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn address_paths() {
        assert_eq!(address_path("amqp://127.0.0.1:5672/q1"), "q1");
        assert_eq!(
            address_path("amqp://host/t/Subscriptions/s"),
            "t/Subscriptions/s"
        );
        assert_eq!(address_path("q1/$management"), "q1/$management");
        assert_eq!(address_path("$cbs"), "$cbs");
    }

    #[test]
    fn dedup_window() {
        let mut d = Dedup {
            config: DuplicateDetection {
                enabled: true,
                window: Duration::from_millis(100),
            },
            ..Dedup::default()
        };
        assert!(d.admit("a", 0));
        assert!(!d.admit("a", 50));
        assert!(d.admit("a", 150));
    }
}
