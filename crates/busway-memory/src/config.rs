//! Limits of the in-process broker.

use std::time::Duration;

use busway_core::preflight::SizeLimit;
use busway_core::{Error, Result};
use serde::Deserialize;

/// Limits of a [`MemoryBroker`](crate::MemoryBroker). Every buffer is bounded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// The broker's largest message, in bytes (data plus attributes). Publishing accepts
    /// [`METADATA_HEADROOM`](busway_core::preflight::METADATA_HEADROOM) bytes less, the room
    /// every adapter keeps for redelivery and dead-letter metadata.
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

impl MemoryConfig {
    /// Checks the limits, naming the offending setting.
    pub fn validate(&self) -> Result<()> {
        self.size_limit()?;
        for (field, value) in [
            ("memory.group_capacity", self.group_capacity),
            ("memory.dead_letter_capacity", self.dead_letter_capacity),
        ] {
            if value == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        Ok(())
    }

    pub(crate) fn size_limit(&self) -> Result<SizeLimit> {
        SizeLimit::new("memory.max_message_bytes", self.max_message_bytes)
    }
}
