//! Dead-letter metadata and the capability to inspect and redrive dead-letter queues.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::message::{Message, format_time, parse_time};

/// Header carrying [`DeadLetterMetadata::reason`].
pub const HEADER_REASON: &str = "busway-dlq-reason";
/// Header carrying [`DeadLetterMetadata::error`].
pub const HEADER_ERROR: &str = "busway-dlq-error";
/// Header carrying [`DeadLetterMetadata::original_topic`].
pub const HEADER_TOPIC: &str = "busway-dlq-topic";
/// Header carrying [`DeadLetterMetadata::group`].
pub const HEADER_GROUP: &str = "busway-dlq-group";
/// Header carrying [`DeadLetterMetadata::attempts`].
pub const HEADER_ATTEMPTS: &str = "busway-dlq-attempts";
/// Header carrying [`DeadLetterMetadata::first_failure`].
pub const HEADER_FIRST_FAILURE: &str = "busway-dlq-first-failure";
/// Header carrying [`DeadLetterMetadata::last_failure`].
pub const HEADER_LAST_FAILURE: &str = "busway-dlq-last-failure";
/// Every dead-letter metadata header, in the order [`DeadLetterMetadata::to_headers`] writes them.
pub const HEADERS: [&str; 7] = [
    HEADER_REASON,
    HEADER_ERROR,
    HEADER_TOPIC,
    HEADER_GROUP,
    HEADER_ATTEMPTS,
    HEADER_FIRST_FAILURE,
    HEADER_LAST_FAILURE,
];

/// Error texts longer than this are cut, so a huge error cannot make the dead letter unsendable
/// (see [`preflight`](crate::preflight): the metadata must fit in the headroom kept free).
pub const MAX_ERROR_LEN: usize = 1024;

/// Reason codes longer than this are cut.
pub const MAX_REASON_LEN: usize = 64;

/// Why a message was dead-lettered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Every allowed delivery failed with a transient error.
    MaxAttemptsExceeded,
    /// The handler reported a permanent error.
    PermanentError,
    /// The message could not be decoded into an event.
    Undecodable,
    /// The event does not satisfy its schema.
    SchemaValidation,
    /// The event's type or version has no handler.
    UnknownType,
    /// The handler panicked on the last attempt.
    HandlerPanicked,
    /// A reason given by the user or a broker.
    Other(String),
}

impl DeadLetterReason {
    /// The stable code written to the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::MaxAttemptsExceeded => "max_attempts_exceeded",
            Self::PermanentError => "permanent_error",
            Self::Undecodable => "undecodable",
            Self::SchemaValidation => "schema_validation",
            Self::UnknownType => "unknown_type",
            Self::HandlerPanicked => "handler_panicked",
            Self::Other(s) => s,
        }
    }

    /// Parses a wire code; unknown codes become [`DeadLetterReason::Other`].
    pub fn parse(code: &str) -> Self {
        match code {
            "max_attempts_exceeded" => Self::MaxAttemptsExceeded,
            "permanent_error" => Self::PermanentError,
            "undecodable" => Self::Undecodable,
            "schema_validation" => Self::SchemaValidation,
            "unknown_type" => Self::UnknownType,
            "handler_panicked" => Self::HandlerPanicked,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The standard metadata every dead-lettered message carries, on every broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterMetadata {
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// The text of the last error (cut to [`MAX_ERROR_LEN`] bytes).
    pub error: String,
    /// The topic the message was published to.
    pub original_topic: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// How many deliveries were attempted.
    pub attempts: u32,
    /// When the first delivery failed.
    pub first_failure: DateTime<Utc>,
    /// When the last delivery failed.
    pub last_failure: DateTime<Utc>,
}

impl DeadLetterMetadata {
    /// The metadata as (header, value) pairs, names from the `HEADER_*` constants.
    ///
    /// Bounded by construction: the error, the reason and the names are cut to their limits, so
    /// the headers always fit in [`METADATA_HEADROOM`](crate::preflight::METADATA_HEADROOM).
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let name = |s: &str| truncate(s, crate::preflight::MAX_NAME_BYTES).to_owned();
        vec![
            (
                HEADER_REASON,
                truncate(self.reason.as_str(), MAX_REASON_LEN).to_owned(),
            ),
            (
                HEADER_ERROR,
                truncate(&self.error, MAX_ERROR_LEN).to_owned(),
            ),
            (HEADER_TOPIC, name(&self.original_topic)),
            (HEADER_GROUP, name(&self.group)),
            (HEADER_ATTEMPTS, self.attempts.to_string()),
            (HEADER_FIRST_FAILURE, format_time(self.first_failure)),
            (HEADER_LAST_FAILURE, format_time(self.last_failure)),
        ]
    }

    /// Reads the metadata back from headers; `None` when a message carries none (or it is
    /// malformed, e.g. written by something else).
    pub fn from_headers(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        Some(Self {
            reason: DeadLetterReason::parse(&get(HEADER_REASON)?),
            error: get(HEADER_ERROR).unwrap_or_default(),
            original_topic: get(HEADER_TOPIC)?,
            group: get(HEADER_GROUP)?,
            attempts: get(HEADER_ATTEMPTS)?.parse().ok()?,
            first_failure: parse_time(&get(HEADER_FIRST_FAILURE)?).ok()?,
            last_failure: parse_time(&get(HEADER_LAST_FAILURE)?).ok()?,
        })
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A message in a dead-letter queue, as it was published, with its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The original message, unchanged.
    pub message: Message,
    /// Why and when it was dead-lettered; `None` when the broker dead-lettered it without busway
    /// (e.g. a Service Bus TTL expiry).
    pub metadata: Option<DeadLetterMetadata>,
}

/// A dead-letter queue and how deep it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterQueue {
    /// The topic the messages came from.
    pub topic: String,
    /// The group that dead-lettered them.
    pub group: String,
    /// Messages in the queue now (or an estimate where the broker only estimates).
    pub depth: u64,
}

/// Inspecting and repairing dead-letter queues: list, peek, redrive, purge.
///
/// Redrive sends messages back to the group that dead-lettered them (not to every group of the
/// topic), so other groups do not see them twice.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// The dead-letter queues that exist, with their depth.
    async fn list(&self) -> Result<Vec<DeadLetterQueue>>;
    /// Up to `limit` dead letters of one group, oldest first, without removing them.
    async fn peek(&self, topic: &str, group: &str, limit: usize) -> Result<Vec<DeadLetter>>;
    /// Moves up to `limit` dead letters (all when `None`) back to the group; returns how many.
    async fn redrive(&self, topic: &str, group: &str, limit: Option<usize>) -> Result<usize>;
    /// Deletes every dead letter of the group; returns how many.
    async fn purge(&self, topic: &str, group: &str) -> Result<usize>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn metadata_round_trips_through_headers() {
        let t = Utc::now();
        let meta = DeadLetterMetadata {
            reason: DeadLetterReason::MaxAttemptsExceeded,
            error: "boom".into(),
            original_topic: "orders".into(),
            group: "billing".into(),
            attempts: 3,
            first_failure: t,
            last_failure: t,
        };
        let headers: HashMap<_, _> = meta.to_headers().into_iter().collect();
        let back = DeadLetterMetadata::from_headers(|k| headers.get(k).cloned()).unwrap();
        assert_eq!(back, meta);
        assert!(DeadLetterMetadata::from_headers(|_| None).is_none());
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate(&s, MAX_ERROR_LEN + 1);
        assert!(cut.len() <= MAX_ERROR_LEN + 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(
            DeadLetterReason::parse("custom"),
            DeadLetterReason::Other("custom".into())
        );
    }
}
