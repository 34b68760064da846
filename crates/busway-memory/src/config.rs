//! Limits of the in-process broker.

use std::time::Duration;

use serde::Deserialize;

/// Limits of a [`MemoryBroker`](crate::MemoryBroker). Every buffer is bounded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Largest message accepted, in bytes (data plus attributes).
    pub max_message_bytes: usize,
    /// Messages a group may hold (ready, delayed and in flight); a publish waits for room.
    pub group_capacity: usize,
    /// Messages kept per topic for groups that start at the earliest position.
    pub retention: usize,
    /// Dead letters a group may hold; beyond that, dead-lettering fails and the message stays.
    pub dead_letter_capacity: usize,
    /// How long a publish waits for room before failing with a timeout.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            group_capacity: 10_000,
            retention: 10_000,
            dead_letter_capacity: 100_000,
            publish_timeout: Duration::from_secs(30),
        }
    }
}
