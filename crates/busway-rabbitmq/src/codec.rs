//! CloudEvents ⇄ AMQP 0-9-1 messages.
//!
//! AMQP 0-9-1 has no official CloudEvents binding. busway writes every attribute as a
//! `cloudEvents_<name>` header (the AMQP 1.0 binding's binary-mode naming), so any reader that
//! knows that binding sees the whole event, and mirrors the attributes AMQP has native properties
//! for, so plain AMQP clients see a well-formed message too:
//!
//! | CloudEvents            | header                         | native property mirror          |
//! |------------------------|--------------------------------|---------------------------------|
//! | `id`                   | `cloudEvents_id`               | `message_id`                    |
//! | `type`                 | `cloudEvents_type`             | `type`                          |
//! | `correlationid` (ext.) | `cloudEvents_correlationid`    | `correlation_id`                |
//! | `time`                 | `cloudEvents_time` (exact)     | `timestamp` (whole seconds)     |
//! | `datacontenttype`      | —                              | `content_type` (the binding's)  |
//! | everything else        | `cloudEvents_<name>`           | —                               |
//! | `data`                 | the body, untouched            |                                 |
//!
//! Messages are persistent (`delivery_mode` 2). A value too long for a native property (over
//! 255 bytes) is simply not mirrored; a content type that long travels in a
//! `cloudEvents_datacontenttype` header. Header *names* are AMQP short strings, so an extension
//! attribute whose name is longer than 243 bytes (255 less the prefix) cannot be written: such
//! a message is refused with [`ErrorKind::InvalidMessage`](busway_core::ErrorKind) before
//! anything is sent. (It can still be read, from a structured-mode body.)
//!
//! Reading takes headers first and falls back to the native properties, accepts
//! `cloudEvents:`-prefixed headers (the binding's newer spelling), structured mode
//! (`application/cloudevents+json` bodies), and plain AMQP messages from clients that know
//! nothing of CloudEvents: `specversion` defaults to 1.0, and `source` to the `app_id` or else the
//! topic. A message without an id or a type is not an event.

use busway_core::message::{CORRELATION_ID, format_time};
use busway_core::redelivery::RedeliveryHeaders;
use busway_core::{Error, Message, Result, wire};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Prefix of the CloudEvents attribute headers busway writes.
pub const HEADER_PREFIX: &str = "cloudEvents_";
/// The longest header name AMQP 0-9-1 can carry (a short string).
pub const MAX_HEADER_NAME_BYTES: usize = 255;
/// The other prefix the AMQP binding allows; read, never written.
const ALT_HEADER_PREFIX: &str = "cloudEvents:";

/// Header carrying the attempt number of a redelivery copy's next delivery (busway republishes a
/// copy to redeliver a message, and the copy must remember how often the message was tried):
/// busway-core's [`HEADER_ATTEMPT`](busway_core::redelivery::HEADER_ATTEMPT), written as text
/// by [`RedeliveryHeaders`], as on every broker.
pub const ATTEMPT_HEADER: &str = busway_core::redelivery::HEADER_ATTEMPT;
/// Header carrying when the first delivery of the message failed (busway-core's
/// [`HEADER_FIRST_FAILURE`](busway_core::redelivery::HEADER_FIRST_FAILURE)).
pub const FIRST_FAILURE_HEADER: &str = busway_core::redelivery::HEADER_FIRST_FAILURE;
/// Header quorum queues set to the number of earlier deliveries of this copy.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// `delivery_mode` of messages written to disk.
const PERSISTENT: u8 = 2;

/// The AMQP properties of a message; its body is `message.data()`, as is.
pub(crate) fn encode(message: &Message) -> Result<BasicProperties> {
    let mut props = BasicProperties::default().with_delivery_mode(PERSISTENT);
    let mut headers = FieldTable::default();
    for (name, value) in wire::binary_attributes(message) {
        // Mirror into the native property where AMQP has one and the value fits.
        if matches!(name.as_str(), "id" | "type" | CORRELATION_ID)
            && let Ok(short) = ShortString::try_new(value.as_str())
        {
            props = match name.as_str() {
                "id" => props.with_message_id(short),
                "type" => props.with_type(short),
                _ => props.with_correlation_id(short),
            };
        }
        headers.insert(
            header_name(&name)?,
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    if let Some(ct) = message.datacontenttype() {
        match ShortString::try_new(ct) {
            Ok(ct) => props = props.with_content_type(ct),
            Err(_) => {
                headers.insert(
                    header_name("datacontenttype")?,
                    AMQPValue::LongString(LongString::from(ct)),
                );
            }
        }
    }
    // For plain AMQP clients; `cloudEvents_time` keeps the exact value.
    if let Some(secs) = message
        .time()
        .and_then(|t| u64::try_from(t.timestamp()).ok())
    {
        props = props.with_timestamp(secs);
    }
    Ok(props.with_headers(headers))
}

fn header_name(attribute: &str) -> Result<ShortString> {
    ShortString::try_new(format!("{HEADER_PREFIX}{attribute}")).map_err(|_| {
        Error::InvalidMessage(format!(
            "attribute name {attribute:?} is too long for an AMQP header"
        ))
    })
}

/// Rebuilds the message from AMQP properties and body. `topic` stands in for `source` when a
/// foreign message carries neither a `cloudEvents_source` header nor an `app_id`.
pub(crate) fn decode(props: &BasicProperties, body: Bytes, topic: &str) -> Result<Message> {
    let content_type = props.content_type().as_ref().map(ShortString::as_str);
    if wire::is_structured(content_type) {
        return wire::from_structured(&body);
    }
    let mut attrs: Vec<(String, String)> = Vec::new();
    if let Some(headers) = props.headers() {
        for (name, value) in headers {
            let name = name.as_str();
            let Some(attr) = name
                .strip_prefix(HEADER_PREFIX)
                .or_else(|| name.strip_prefix(ALT_HEADER_PREFIX))
            else {
                continue;
            };
            attrs.push((attr.to_owned(), header_text(attr, value)?));
        }
    }
    let has = |attrs: &[(String, String)], name: &str| attrs.iter().any(|(k, _)| k == name);
    let fallback = |attrs: &mut Vec<(String, String)>, name: &str, value: Option<String>| {
        if !has(attrs, name)
            && let Some(value) = value
        {
            attrs.push((name.to_owned(), value));
        }
    };
    let native = |v: &Option<ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    fallback(&mut attrs, "id", native(props.message_id()));
    fallback(&mut attrs, "type", native(props.kind()));
    fallback(
        &mut attrs,
        "source",
        native(props.app_id()).or_else(|| Some(topic.to_owned())),
    );
    fallback(
        &mut attrs,
        "specversion",
        Some(busway_core::message::SPEC_VERSION.to_owned()),
    );
    fallback(
        &mut attrs,
        "time",
        props
            .timestamp()
            .and_then(|secs| i64::try_from(secs).ok())
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
            .map(format_time),
    );
    fallback(&mut attrs, CORRELATION_ID, native(props.correlation_id()));
    if !has(&attrs, "id") || !has(&attrs, "type") {
        return Err(Error::InvalidMessage(
            "the AMQP message has neither a `cloudEvents_id`/`message_id` nor a `cloudEvents_type`/`type`: \
             it is not an event"
                .into(),
        ));
    }
    wire::from_binary(
        attrs
            .iter_mut()
            .map(|(k, v)| (k.as_str(), std::mem::take(v))),
        &[""],
        content_type.map(str::to_owned),
        body,
    )
}

/// A header value as attribute text. Other clients may send numbers, booleans or timestamps
/// where busway writes strings; those have an obvious text form. Tables, arrays and bytes do not.
fn header_text(attr: &str, value: &AMQPValue) -> Result<String> {
    let text = match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).map_err(|_| {
            Error::InvalidMessage(format!("header `{HEADER_PREFIX}{attr}` is not UTF-8"))
        })?,
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(secs) => i64::try_from(*secs)
            .ok()
            .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
            .map(format_time)
            .ok_or_else(|| {
                Error::InvalidMessage(format!(
                    "header `{HEADER_PREFIX}{attr}` is not a valid timestamp"
                ))
            })?,
        other => {
            return Err(Error::InvalidMessage(format!(
                "header `{HEADER_PREFIX}{attr}` holds a {:?}, not a CloudEvents attribute value",
                other.get_type()
            )));
        }
    };
    Ok(text)
}

/// The broker's message id, where the publisher set a non-empty one: the id of the stand-in for
/// a message that could not be decoded ([`Message::undecodable`]).
pub(crate) fn message_id(props: &BasicProperties) -> Option<&str> {
    props
        .message_id()
        .as_ref()
        .map(|s| s.as_str())
        .filter(|s| !s.is_empty())
}

/// Attempt number and first failure of a delivery: the attempt a redelivery copy says its
/// first delivery counts as ([`ATTEMPT_HEADER`], 1 for a message never redelivered), plus the
/// earlier deliveries of this copy, which the broker counts: the quorum `x-delivery-count`, or
/// on classic queues the `redelivered` flag as a lower bound (a classic queue only says whether
/// a message was delivered before, which is why busway gives dropped deliveries back as copies
/// rather than requeuing them there).
pub(crate) fn attempt_of(
    props: &BasicProperties,
    redelivered: bool,
) -> (u32, Option<DateTime<Utc>>) {
    let headers = props.headers().as_ref();
    let get = |name: &str| headers.and_then(|h| h.inner().get(name));
    let copy_attempt = match get(ATTEMPT_HEADER) {
        // busway-core's RedeliveryHeaders, as text: the attempt of the copy's first delivery.
        Some(value @ (AMQPValue::LongString(_) | AMQPValue::ShortString(_))) => {
            as_u64(value).unwrap_or(1).max(1)
        }
        // A number: a copy written by busway-rabbitmq before it shared busway-core's headers,
        // which counted the deliveries before the copy. Still read, so that copies waiting in
        // wait queues across an upgrade keep their count.
        Some(value) => as_u64(value).unwrap_or(0).saturating_add(1),
        None => 1,
    };
    let this_copy = match get(DELIVERY_COUNT_HEADER).and_then(as_u64) {
        Some(count) => count,
        None => u64::from(redelivered),
    };
    let attempt = u32::try_from(copy_attempt.saturating_add(this_copy)).unwrap_or(u32::MAX);
    let first_failure = get(FIRST_FAILURE_HEADER)
        .and_then(|v| header_text(FIRST_FAILURE_HEADER, v).ok())
        .and_then(|s| busway_core::message::parse_time(&s).ok());
    (attempt, first_failure)
}

/// `props` as a redelivery copy: the broker's bookkeeping and any earlier copy's redelivery
/// headers replaced by busway-core's [`RedeliveryHeaders`] for the copy's next delivery.
pub(crate) fn redelivery_copy(
    props: &BasicProperties,
    next: &RedeliveryHeaders,
) -> BasicProperties {
    with_headers(props, |h| {
        h.retain(|k, _| {
            !is_broker_bookkeeping(k.as_str()) && !RedeliveryHeaders::is_header(k.as_str())
        });
        for (name, value) in next.to_headers() {
            h.insert(name.into(), text(value));
        }
    })
}

fn as_u64(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::Timestamp(n) => Some(*n),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

/// `props` carrying busway-core's [`HEADER_DUE`](busway_core::redelivery::HEADER_DUE): the
/// message is not to be handled before `due` (a scheduled message waiting in hops).
pub(crate) fn with_due(props: &BasicProperties, due: DateTime<Utc>) -> BasicProperties {
    with_headers(props, |h| {
        h.insert(
            busway_core::redelivery::HEADER_DUE.into(),
            text(busway_core::message::format_time(due)),
        );
    })
}

/// When a message waiting in hops is due, if it carries a due time.
pub(crate) fn due_of(props: &BasicProperties) -> Option<DateTime<Utc>> {
    header(props, busway_core::redelivery::HEADER_DUE)
        .and_then(|s| busway_core::message::parse_time(&s).ok())
}

/// `props` as the next hop of a message that is not due yet: as received, minus the broker's
/// dead-lettering history (which grows with every hop).
pub(crate) fn next_hop(props: &BasicProperties) -> BasicProperties {
    with_headers(props, |h| {
        h.retain(|k, _| !is_broker_bookkeeping(k.as_str()))
    })
}

/// `props` as a dead letter: the original's properties plus the dead-letter metadata headers.
/// The broker's dead-lettering history (a wait queue's `x-death`) is dropped: it is not part of
/// the original message, and would eat into the headroom kept for busway's metadata.
pub(crate) fn dead_letter_copy(
    props: &BasicProperties,
    metadata: &busway_core::DeadLetterMetadata,
) -> BasicProperties {
    with_headers(props, |h| {
        h.retain(|k, _| !is_broker_bookkeeping(k.as_str()));
        for (name, value) in metadata.to_headers() {
            h.insert(name.into(), text(value));
        }
    })
}

/// `props` with its headers changed by `edit`: used to republish a delivered message as it was,
/// plus or minus busway's bookkeeping headers.
pub(crate) fn with_headers(
    props: &BasicProperties,
    edit: impl FnOnce(&mut std::collections::BTreeMap<ShortString, AMQPValue>),
) -> BasicProperties {
    let mut headers = props
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    edit(&mut headers);
    props.clone().with_headers(FieldTable::from(headers))
}

/// Bytes of an AMQP frame around its payload: type, channel, size, frame end.
pub(crate) const FRAME_OVERHEAD: usize = 8;

/// The size of the content-header frame payload that carries `props`: class, weight, body
/// size, property flags, then the properties (the `headers` table as AMQP encodes it).
///
/// AMQP 0-9-1 cannot split a content header over frames: properties that do not fit in the
/// connection's `frame_max` make RabbitMQ close the whole connection (FRAME_ERROR). Knowing the
/// size lets busway refuse such a message, or a copy of one, before sending it.
pub(crate) fn header_frame_len(props: &BasicProperties) -> usize {
    let short = |s: &Option<ShortString>| s.as_ref().map_or(0, |s| 1 + s.as_str().len());
    let mut len = 2 + 2 + 8 + 2; // class, weight, body size, property flags
    len += short(props.content_type())
        + short(props.content_encoding())
        + short(props.correlation_id())
        + short(props.reply_to())
        + short(props.expiration())
        + short(props.message_id())
        + short(props.kind())
        + short(props.user_id())
        + short(props.app_id())
        + short(props.cluster_id());
    len += props.delivery_mode().map_or(0, |_| 1)
        + props.priority().map_or(0, |_| 1)
        + props.timestamp().map_or(0, |_| 8);
    if let Some(headers) = props.headers() {
        len += table_len(headers);
    }
    len
}

/// Encoded size of a field table. Nested tables and arrays are walked with an explicit stack,
/// so a deeply nested table from another client cannot exhaust the call stack.
fn table_len(table: &FieldTable) -> usize {
    let mut len = 4;
    let mut pending: Vec<&AMQPValue> = Vec::new();
    for (name, value) in table.inner() {
        len += 1 + name.as_str().len();
        pending.push(value);
    }
    while let Some(value) = pending.pop() {
        // Every value starts with its type tag.
        len += 1 + match value {
            AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
            AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
            AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
            AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
            AMQPValue::DecimalValue(_) => 5,
            AMQPValue::ShortString(s) => 1 + s.as_str().len(),
            AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
            AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
            AMQPValue::Void => 0,
            AMQPValue::FieldArray(array) => {
                pending.extend(array.as_slice());
                4
            }
            AMQPValue::FieldTable(table) => {
                for (name, value) in table.inner() {
                    len += 1 + name.as_str().len();
                    pending.push(value);
                }
                4
            }
        };
    }
    len
}

/// A text header value.
pub(crate) fn text(value: impl Into<Vec<u8>>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The text of a header, if present and textual.
pub(crate) fn header(props: &BasicProperties, name: &str) -> Option<String> {
    let value = props.headers().as_ref()?.inner().get(name)?;
    header_text(name, value).ok()
}

/// Headers the broker adds when it redelivers or dead-letters: stale on a copy busway
/// republishes, and misleading (a quorum queue would count a fresh copy as redelivered).
pub(crate) fn is_broker_bookkeeping(name: &str) -> bool {
    name == DELIVERY_COUNT_HEADER
        || name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn full() -> Message {
        Message::builder("https://example.com/orders", "com.example.order.placed.v2")
            .id("order-1")
            .subject("orders/1")
            .dataschema("https://example.com/schemas/1")
            .datacontenttype("application/octet-stream")
            .time(Utc.timestamp_opt(1_767_225_600, 123_456_789).unwrap())
            .partition_key("customer-42")
            .correlation_id("corr-1")
            .extension("tenant", "acme")
            .data((0u8..=255).collect::<Vec<u8>>())
            .build()
            .unwrap()
    }

    #[test]
    fn binary_mode_round_trips_every_attribute() {
        for m in [
            full(),
            Message::from_wire("min", "/s", "t").build().unwrap(),
        ] {
            let props = encode(&m).unwrap();
            assert_eq!(decode(&props, m.data().clone(), "topic").unwrap(), m);
        }
    }

    #[test]
    fn native_properties_mirror_the_attributes() {
        let props = encode(&full()).unwrap();
        assert_eq!(props.message_id().as_ref().unwrap().as_str(), "order-1");
        assert_eq!(
            props.kind().as_ref().unwrap().as_str(),
            "com.example.order.placed.v2"
        );
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            "application/octet-stream"
        );
        assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), "corr-1");
        assert_eq!(*props.timestamp(), Some(1_767_225_600));
        assert_eq!(*props.delivery_mode(), Some(PERSISTENT));
        assert!(
            props.app_id().is_none(),
            "app_id is the application's, not `source`"
        );
        assert_eq!(
            header(&props, "cloudEvents_specversion").as_deref(),
            Some("1.0")
        );
        assert_eq!(
            header(&props, "cloudEvents_time").as_deref(),
            Some("2026-01-01T00:00:00.123456789Z")
        );
        // Every attribute is in a header, so a binding-aware reader needs no native property.
        for (attr, value) in [
            ("id", "order-1"),
            ("type", "com.example.order.placed.v2"),
            ("source", "https://example.com/orders"),
            ("correlationid", "corr-1"),
        ] {
            assert_eq!(
                header(&props, &format!("cloudEvents_{attr}")).as_deref(),
                Some(value)
            );
        }
        // The binding carries the content type in the native property only.
        assert!(header(&props, "cloudEvents_datacontenttype").is_none());
        let long = Message::builder("/s", "t".repeat(300)).build().unwrap();
        let props = encode(&long).unwrap();
        assert!(props.kind().is_none());
        assert_eq!(header(&props, "cloudEvents_type"), Some("t".repeat(300)));
        assert_eq!(decode(&props, Bytes::new(), "x").unwrap(), long);
    }

    #[test]
    fn foreign_messages_with_native_properties_only_are_events() {
        let props = BasicProperties::default()
            .with_message_id("legacy-7".into())
            .with_type("legacy.thing.happened".into())
            .with_content_type("application/json".into())
            .with_timestamp(1_700_000_000)
            .with_correlation_id("c-9".into())
            .with_app_id("legacy-app".into());
        let m = decode(&props, Bytes::from_static(b"{\"a\":1}"), "things").unwrap();
        assert_eq!(m.id(), "legacy-7");
        assert_eq!(m.ty(), "legacy.thing.happened");
        assert_eq!(m.source(), "legacy-app");
        assert_eq!(m.datacontenttype(), Some("application/json"));
        assert_eq!(m.correlation_id(), Some("c-9"));
        assert_eq!(m.time().unwrap().timestamp(), 1_700_000_000);
        let no_app = BasicProperties::default()
            .with_message_id("x".into())
            .with_type("t".into());
        assert_eq!(
            decode(&no_app, Bytes::new(), "things").unwrap().source(),
            "things"
        );
    }

    #[test]
    fn foreign_header_types_and_structured_mode_are_read() {
        let mut headers = FieldTable::default();
        headers.insert(
            "cloudEvents:id".into(),
            AMQPValue::ShortString("h-1".into()),
        );
        headers.insert("cloudEvents_source".into(), text("/py"));
        headers.insert("cloudEvents_type".into(), text("py.event"));
        headers.insert("cloudEvents_specversion".into(), text("1.0"));
        headers.insert("cloudEvents_count".into(), AMQPValue::LongInt(3));
        let m = decode(
            &BasicProperties::default().with_headers(headers),
            Bytes::new(),
            "t",
        )
        .unwrap();
        assert_eq!((m.id(), m.extension("count")), ("h-1", Some("3")));

        let structured = wire::to_structured(&full()).unwrap();
        let props =
            BasicProperties::default().with_content_type(wire::STRUCTURED_CONTENT_TYPE.into());
        assert_eq!(
            decode(&props, Bytes::from(structured), "t").unwrap(),
            full()
        );
    }

    #[test]
    fn attribute_names_too_long_for_a_header_are_refused_not_cut() {
        let fits = "a".repeat(MAX_HEADER_NAME_BYTES - HEADER_PREFIX.len());
        let m = Message::builder("/s", "t")
            .extension(fits.as_str(), "v")
            .build()
            .unwrap();
        assert_eq!(decode(&encode(&m).unwrap(), Bytes::new(), "t").unwrap(), m);
        // Found by the fuzzer: a structured-mode event can carry such a name, and busway reads
        // it, but cannot write it as an AMQP header.
        let long = format!("{fits}a");
        let m = Message::builder("/s", "t")
            .extension(long.as_str(), "v")
            .build()
            .unwrap();
        let err = encode(&m).unwrap_err();
        assert_eq!(err.kind(), busway_core::ErrorKind::InvalidMessage);
        assert!(
            err.to_string().contains("too long for an AMQP header"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_not_an_event() {
        let err = decode(
            &BasicProperties::default(),
            Bytes::from_static(b"\xff"),
            "t",
        )
        .unwrap_err();
        assert_eq!(err.kind(), busway_core::ErrorKind::InvalidMessage);
        let mut headers = FieldTable::default();
        headers.insert(
            "cloudEvents_id".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_type("t".into());
        assert!(decode(&props, Bytes::new(), "t").is_err());
        let structured =
            BasicProperties::default().with_content_type(wire::STRUCTURED_CONTENT_TYPE.into());
        assert!(decode(&structured, Bytes::from_static(b"not json"), "t").is_err());
    }

    #[test]
    fn attempts_add_the_copys_attempt_and_its_own_deliveries() {
        let plain = BasicProperties::default();
        assert_eq!(attempt_of(&plain, false).0, 1);
        assert_eq!(attempt_of(&plain, true).0, 2);
        let t = Utc.timestamp_opt(1_700_000_000, 5).unwrap();
        let next = RedeliveryHeaders {
            attempt: 3,
            first_failure: t,
            due: None,
        };
        let copy = redelivery_copy(&plain, &next);
        assert_eq!(attempt_of(&copy, false), (3, Some(t)));
        // Shared with the other adapters: busway-core reads what the copy carries.
        let read = RedeliveryHeaders::from_headers(|k| header(&copy, k)).unwrap();
        assert_eq!(read, next);
        let quorum = with_headers(&copy, |h| {
            h.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(2));
        });
        assert_eq!(attempt_of(&quorum, true).0, 5);
        // A copy of a copy replaces the headers and drops the broker's count of the old copy.
        let again = redelivery_copy(&quorum, &RedeliveryHeaders { attempt: 6, ..next });
        assert_eq!(attempt_of(&again, false).0, 6);
    }

    /// The size AMQP's own encoder gives the properties, plus class, weight and body size.
    fn encoded_header_len(props: &BasicProperties) -> usize {
        let bytes =
            cookie_factory::gen_simple(lapin::protocol::basic::gen_properties(props), Vec::new())
                .unwrap();
        2 + 2 + 8 + bytes.len()
    }

    #[test]
    fn header_frame_len_is_what_amqp_encodes() {
        let mut nested = FieldTable::default();
        nested.insert("n".into(), AMQPValue::Double(1.5));
        nested.insert(
            "a".into(),
            AMQPValue::FieldArray(
                vec![AMQPValue::Boolean(true), text("x"), AMQPValue::Void].into(),
            ),
        );
        let foreign = with_headers(&encode(&full()).unwrap(), |h| {
            h.insert("t".into(), AMQPValue::FieldTable(nested));
            h.insert("b".into(), AMQPValue::ByteArray(vec![1, 2, 3].into()));
            h.insert("s".into(), AMQPValue::ShortString("short".into()));
            h.insert("i".into(), AMQPValue::ShortInt(-3));
            h.insert("ts".into(), AMQPValue::Timestamp(7));
        })
        .with_priority(3)
        .with_reply_to("r".into())
        .with_app_id("app".into());
        for props in [
            BasicProperties::default(),
            encode(&full()).unwrap(),
            encode(&Message::from_wire("min", "/s", "t").build().unwrap()).unwrap(),
            foreign,
        ] {
            assert_eq!(
                header_frame_len(&props),
                encoded_header_len(&props),
                "{props:?}"
            );
        }
    }

    #[test]
    fn copies_written_before_the_shared_headers_keep_their_count() {
        // busway-rabbitmq used to write the number of deliveries before the copy, as a number.
        let legacy = with_headers(&BasicProperties::default(), |h| {
            h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(2));
        });
        assert_eq!(attempt_of(&legacy, false).0, 3);
        let garbage = with_headers(&BasicProperties::default(), |h| {
            h.insert(ATTEMPT_HEADER.into(), text("many"));
            h.insert(FIRST_FAILURE_HEADER.into(), AMQPValue::Boolean(true));
        });
        assert_eq!(attempt_of(&garbage, false), (1, None));
    }
}
