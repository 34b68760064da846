//! The headers a redelivery copy carries, the same on every broker that redelivers by copying
//! (RabbitMQ wait queues, Kafka retry topics, Service Bus scheduled copies).
//!
//! Brokers count deliveries of one copy at most; when busway redelivers by publishing a copy and
//! settling the original, the copy has to say which attempt it is and when the first one failed,
//! so the dead letter's metadata stays exact.
//!
//! ```
//! use busway_core::redelivery::RedeliveryHeaders;
//! use std::collections::HashMap;
//!
//! let sent = RedeliveryHeaders { attempt: 3, first_failure: chrono::Utc::now(), due: None };
//! let wire: HashMap<_, _> = sent.to_headers().into_iter().collect();
//! let read = RedeliveryHeaders::from_headers(|k| wire.get(k).cloned()).unwrap();
//! assert_eq!(read.attempt, 3);
//! ```

use chrono::{DateTime, Utc};

use crate::message::{format_time, parse_time};

/// Header carrying the attempt number of the next delivery of a copy.
pub const HEADER_ATTEMPT: &str = "busway-attempt";
/// Header carrying when the first delivery failed.
pub const HEADER_FIRST_FAILURE: &str = "busway-first-failure";
/// Header carrying when a copy is due, for brokers where the consumer holds it back.
pub const HEADER_DUE: &str = "busway-due";
/// Every header a redelivery copy may carry (for adapters and fuzzers that list busway's own).
pub const HEADERS: [&str; 3] = [HEADER_ATTEMPT, HEADER_FIRST_FAILURE, HEADER_DUE];

/// What a redelivery copy says about its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedeliveryHeaders {
    /// The attempt number the copy's next delivery counts as.
    pub attempt: u32,
    /// When the first delivery failed.
    pub first_failure: DateTime<Utc>,
    /// When the copy may be delivered, where the consumer side holds it back.
    pub due: Option<DateTime<Utc>>,
}

impl RedeliveryHeaders {
    /// The headers as (name, value) pairs.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (HEADER_ATTEMPT, self.attempt.to_string()),
            (HEADER_FIRST_FAILURE, format_time(self.first_failure)),
        ];
        if let Some(due) = self.due {
            headers.push((HEADER_DUE, format_time(due)));
        }
        headers
    }

    /// Reads the headers back; `None` when the message is not a redelivery copy (or they are
    /// malformed, e.g. written by something else).
    pub fn from_headers(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        Some(Self {
            attempt: get(HEADER_ATTEMPT)?.parse().ok()?,
            first_failure: parse_time(&get(HEADER_FIRST_FAILURE)?).ok()?,
            due: get(HEADER_DUE).and_then(|d| parse_time(&d).ok()),
        })
    }

    /// Whether `name` is one of these headers (to strip them from a copy of a copy).
    pub fn is_header(name: &str) -> bool {
        matches!(name, HEADER_ATTEMPT | HEADER_FIRST_FAILURE | HEADER_DUE)
    }
}
