//! Topic names busway derives from a topic and a group.
//!
//! - `<topic>`: what publishers write and every group reads.
//! - `<topic>.scheduled`: messages published with `schedule`, held by each group until due.
//! - `<topic>.<group>.retry.<n>`: the group's delayed redeliveries after attempt `n` (capped at
//!   the configured tiers), held until due.
//! - `<topic>.<group>.dlq`: the group's dead letters.

use busway_core::{Error, Result};

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// Suffix of dead-letter topics.
pub(crate) const DLQ_SUFFIX: &str = ".dlq";

/// The topic of messages scheduled for later delivery on `topic`.
pub(crate) fn scheduled(topic: &str) -> String {
    format!("{topic}.scheduled")
}

/// The retry topic of tier `tier` (from 1).
pub(crate) fn retry(topic: &str, group: &str, tier: u32) -> String {
    format!("{topic}.{group}.retry.{tier}")
}

/// The dead-letter topic of a group.
pub(crate) fn dlq(topic: &str, group: &str) -> String {
    format!("{topic}.{group}{DLQ_SUFFIX}")
}

/// The consumer group whose committed offsets mark how far a DLQ has been redriven or purged.
pub(crate) fn dlq_cursor_group(dlq_topic: &str) -> String {
    format!("busway-dlq-cursor.{dlq_topic}")
}

/// Splits a DLQ topic name into (topic, group); the group is taken as the last dotted segment,
/// which is exact for groups without dots.
pub(crate) fn parse_dlq(name: &str) -> Option<(String, String)> {
    let stem = name.strip_suffix(DLQ_SUFFIX)?;
    let (topic, group) = stem.rsplit_once('.')?;
    (!topic.is_empty() && !group.is_empty()).then(|| (topic.to_owned(), group.to_owned()))
}

/// Checks that `name` can be (part of) a Kafka topic name: ASCII letters, digits, `.`, `_`, `-`.
pub(crate) fn validate(field: &str, name: &str) -> Result<()> {
    // busway's own rules first (not empty, bounded for dead-letter metadata), then the broker's.
    busway_core::preflight::check_name(field, name)?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Error::config(
            field,
            format!(
                "{name:?} may only contain ASCII letters, digits, '.', '_' and '-' (it names Kafka topics)"
            ),
        ));
    }
    Ok(())
}

/// Checks a topic and group together, including the length of the longest derived name.
pub(crate) fn validate_pair(topic: &str, group: &str, tiers: u32) -> Result<()> {
    validate("topic", topic)?;
    validate("group", group)?;
    let longest = retry(topic, group, tiers)
        .len()
        .max(dlq(topic, group).len());
    if longest > MAX_TOPIC_LEN {
        return Err(Error::config(
            "group",
            format!(
                "topic and group are too long: derived topic names would exceed {MAX_TOPIC_LEN} characters"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_round_trip() {
        assert_eq!(retry("orders", "billing", 2), "orders.billing.retry.2");
        assert_eq!(dlq("orders", "billing"), "orders.billing.dlq");
        assert_eq!(
            parse_dlq("shop.orders.billing.dlq"),
            Some(("shop.orders".into(), "billing".into()))
        );
        assert_eq!(parse_dlq("orders"), None);
        assert!(validate("group", "billing-v2_x.y").is_ok());
        assert!(validate("group", "bad group").is_err());
        assert!(validate_pair("t", &"g".repeat(250), 3).is_err());
    }
}
