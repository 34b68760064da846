//! The checks every adapter runs before sending a message: names, the CloudEvents rules, and a
//! size limit that keeps room for busway's own metadata.
//!
//! A message busway accepts for publishing must stay deliverable on every path it may take
//! later: a redelivery copy carries the [redelivery headers](crate::redelivery), a dead letter
//! the [dead-letter metadata](crate::DeadLetterMetadata). Both are bounded, and
//! [`METADATA_HEADROOM`] bytes cover the largest of them with its encoding, so the publish-side
//! limit is the broker's limit minus the headroom. Without it a message near the broker's limit
//! could be published but never dead-lettered.
//!
//! ```
//! use busway_core::preflight::{SizeLimit, METADATA_HEADROOM};
//! use busway_core::Message;
//!
//! let limit = SizeLimit::new("kafka.max_message_bytes", 1024 * 1024).unwrap();
//! assert_eq!(limit.for_publish(), 1024 * 1024 - METADATA_HEADROOM);
//! let m = Message::builder("/shop", "order.placed").data(vec![0u8; 100]).build().unwrap();
//! limit.check("orders", &m, m.encoded_len()).unwrap();
//! let big = Message::builder("/shop", "order.placed").data(vec![0u8; 1024 * 1024 - 100]).build().unwrap();
//! assert!(limit.check("orders", &big, big.encoded_len()).is_err());
//! ```

use crate::error::{Error, Result};
use crate::message::Message;
use crate::wire;

/// The longest topic or group name busway accepts, in bytes (Kafka's limit for topic names, the
/// strictest of the brokers). Names travel in dead-letter metadata, so they must be bounded.
pub const MAX_NAME_BYTES: usize = 249;

/// Room kept free under a broker's size limit for busway's metadata (redelivery headers or
/// dead-letter metadata, whichever is larger, plus its encoding).
pub const METADATA_HEADROOM: usize = 4096;

/// Checks a topic or group name: not empty, at most [`MAX_NAME_BYTES`]. `what` names the
/// setting in the error (e.g. `"topic"`).
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::config(what, "must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::config(
            what,
            format!(
                "{} bytes is longer than the {MAX_NAME_BYTES} bytes busway allows",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// A broker's message size limit and the smaller one busway applies when publishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeLimit {
    broker: usize,
}

impl SizeLimit {
    /// The limit for a broker that takes messages of up to `max_message_bytes`; `field` names
    /// the setting in the error when the limit leaves no room for a message after the headroom.
    pub fn new(field: &str, max_message_bytes: usize) -> Result<Self> {
        if max_message_bytes <= 2 * METADATA_HEADROOM {
            return Err(Error::config(
                field,
                format!(
                    "{max_message_bytes} bytes leaves no room for messages: busway keeps \
                     {METADATA_HEADROOM} bytes for redelivery and dead-letter metadata, so the \
                     limit must be above {}",
                    2 * METADATA_HEADROOM
                ),
            ));
        }
        Ok(Self {
            broker: max_message_bytes,
        })
    }

    /// The broker's limit, which redelivery and dead-letter copies may use in full.
    pub fn broker(&self) -> usize {
        self.broker
    }

    /// The largest message busway publishes.
    pub fn for_publish(&self) -> usize {
        self.broker - METADATA_HEADROOM
    }

    /// Refuses a message whose encoded size (as the adapter measures it) leaves no headroom.
    pub fn check_size(&self, encoded_len: usize) -> Result<()> {
        let limit = self.for_publish();
        if encoded_len > limit {
            return Err(Error::TooLarge {
                size: encoded_len,
                limit,
            });
        }
        Ok(())
    }

    /// Everything checked before a publish: the topic name, the CloudEvents rules, a
    /// `datacontenttype` that binary mode can carry, and the size.
    pub fn check(&self, topic: &str, message: &Message, encoded_len: usize) -> Result<()> {
        check_name("topic", topic)?;
        message.validate()?;
        check_binary_mode(message)?;
        self.check_size(encoded_len)
    }
}

/// Refuses a message whose `datacontenttype` is a CloudEvents event format: busway publishes in
/// binary mode, where that content type would make every receiver (busway's and the CloudEvents
/// SDKs') read the data as the event itself ([`wire::is_event_format`]). Checked on every
/// broker, the in-process one included, so that swapping brokers changes nothing.
pub fn check_binary_mode(message: &Message) -> Result<()> {
    match message.datacontenttype() {
        Some(ct) if wire::is_event_format(Some(ct)) => Err(Error::InvalidMessage(format!(
            "datacontenttype `{ct}` is a CloudEvents event format: in binary mode, which busway \
             publishes in, receivers would read the data as the event; give the data's own media \
             type (e.g. application/json)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_event_format_as_datacontenttype_is_refused_before_sending() {
        let limit = SizeLimit::new("max_message_bytes", 1 << 20).unwrap();
        for ct in [
            "application/cloudevents+json",
            "Application/CloudEvents+JSON; charset=utf-8",
            "application/cloudevents-batch+json",
        ] {
            let m = Message::builder("/s", "t")
                .datacontenttype(ct)
                .data(br#"{"specversion":"1.0","id":"x","source":"/y","type":"z"}"#.to_vec())
                .build()
                .unwrap();
            let err = limit.check("orders", &m, m.encoded_len()).unwrap_err();
            assert!(matches!(err, Error::InvalidMessage(_)), "{ct}: {err:?}");
            assert!(err.to_string().contains("datacontenttype"), "{err}");
        }
        let json = Message::builder("/s", "t")
            .datacontenttype("application/json")
            .data(b"{}".to_vec())
            .build()
            .unwrap();
        limit.check("orders", &json, json.encoded_len()).unwrap();
    }
    use crate::dead_letter::{DeadLetterMetadata, DeadLetterReason, MAX_ERROR_LEN, MAX_REASON_LEN};
    use crate::redelivery::RedeliveryHeaders;

    /// Encoding overhead assumed per metadata header, on top of its name and value: a Kafka header's
    /// two varint lengths, an AMQP map entry's constructors and lengths, an AMQP 0-9-1 field's type
    /// tag and lengths all fit.
    const PER_HEADER_OVERHEAD: usize = 16;

    /// The largest metadata busway ever adds to a message, as (name, value) byte lengths; used to
    /// prove that [`METADATA_HEADROOM`] covers it.
    fn worst_case_metadata_bytes() -> usize {
        let long_name = "n".repeat(MAX_NAME_BYTES);
        let dead_letter = DeadLetterMetadata {
            reason: DeadLetterReason::Other("r".repeat(MAX_REASON_LEN * 4)),
            error: "e".repeat(MAX_ERROR_LEN * 4),
            original_topic: long_name.clone(),
            group: long_name.clone(),
            attempts: u32::MAX,
            first_failure: chrono::DateTime::<chrono::Utc>::MAX_UTC,
            last_failure: chrono::DateTime::<chrono::Utc>::MAX_UTC,
        };
        let redelivery = RedeliveryHeaders {
            attempt: u32::MAX,
            first_failure: chrono::DateTime::<chrono::Utc>::MAX_UTC,
            due: Some(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        };
        let size = |headers: Vec<(&'static str, String)>| -> usize {
            headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + PER_HEADER_OVERHEAD)
                .sum()
        };
        // A dead letter may also still carry the redelivery headers of its last copy, and adapters
        // that route copies to one group add the group's name once more.
        size(dead_letter.to_headers())
            + size(redelivery.to_headers())
            + long_name.len()
            + PER_HEADER_OVERHEAD
            + 32
    }

    #[test]
    fn headroom_covers_the_largest_metadata_busway_adds() {
        let worst = worst_case_metadata_bytes();
        assert!(
            worst <= METADATA_HEADROOM,
            "metadata can take {worst} bytes, more than the {METADATA_HEADROOM} kept free"
        );
    }

    #[test]
    fn publish_limit_keeps_the_headroom_and_names_the_setting() {
        let limit = SizeLimit::new("memory.max_message_bytes", 64 * 1024).unwrap();
        assert!(limit.check_size(64 * 1024 - METADATA_HEADROOM).is_ok());
        let err = limit
            .check_size(64 * 1024 - METADATA_HEADROOM + 1)
            .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        let err = SizeLimit::new("memory.max_message_bytes", 1024).unwrap_err();
        assert!(
            err.to_string().contains("memory.max_message_bytes"),
            "{err}"
        );
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("topic", "orders").is_ok());
        assert!(check_name("topic", "").is_err());
        let err = check_name("group", &"g".repeat(MAX_NAME_BYTES + 1)).unwrap_err();
        assert!(err.to_string().contains("`group`"), "{err}");
    }
}
