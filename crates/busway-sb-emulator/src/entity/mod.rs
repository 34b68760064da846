//! The in-memory namespace: entities, routing, locks, sessions and the timers that drive them.
//!
//! All state sits behind one mutex. The emulator serves tests, not production traffic, and a
//! single lock makes every Service Bus rule that spans entities (fan-out, forwarding,
//! dead-lettering, quota checks on several subscriptions) atomic without further thought. The lock
//! is never held across an `.await`. Link tasks learn about changes through a `watch` counter.

mod dedup;
mod error;
pub(crate) mod message;
pub(crate) mod queue;
mod rules;
mod send;
mod session;
mod settle;
mod setup;
mod timers;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fe2o3_amqp_types::messaging::MessageId;
use tokio::sync::watch;

use crate::{
    config::{NamespaceConfig, QueueConfig, RuleConfig, RuleFilter, TopicConfig},
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

use self::dedup::SendSide;
pub(crate) use self::error::OpError;

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
    /// Entities whose dead-lettering fails, as asked by a test (see `refuse_dead_letters`).
    refused_dead_letters: std::collections::HashSet<String>,
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

    /// Number of messages in an entity's active and dead-letter queues (for tests and diagnostics).
    pub fn counts(&self, path: &str) -> Option<(usize, usize)> {
        let state = self.lock();
        state
            .queues
            .get(&entity_key(path))
            .map(|q| (q.active.len(), q.dead_letter.len()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::{dedup::Dedup, *};
    use crate::config::DuplicateDetection;

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
