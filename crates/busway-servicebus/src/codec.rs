//! CloudEvents AMQP binding, binary mode: busway messages to Service Bus messages and back.
//!
//! Every attribute but `datacontenttype` travels as an application property `cloudEvents_<name>`
//! (string values, so `time` keeps its nanoseconds); `datacontenttype` is the AMQP content type;
//! the data is the single Data section. Service Bus system properties are filled from the event so
//! the broker's features work on it: MessageId = id (duplicate detection), SessionId = partition
//! key (sessions), CorrelationId = the `correlationid` extension (correlation filters).
//! On receive, `cloudEvents:` prefixed properties and structured-mode bodies are read too.

use std::borrow::Cow;

use azservicebus::ServiceBusMessage;
use busway_core::dead_letter::{self, DeadLetterMetadata};
use busway_core::redelivery::RedeliveryHeaders;
use busway_core::wire;
use busway_core::{Error, Message, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fe2o3_amqp_types::messaging::message::__private::Serializable;
use fe2o3_amqp_types::messaging::{ApplicationProperties, Body, Message as AmqpMessage, MessageId};
use fe2o3_amqp_types::primitives::{OrderedMap, SimpleValue, Value};

/// Prefix of CloudEvents attributes in application properties (AMQP binding).
pub(crate) const CE_PREFIX: &str = "cloudEvents_";
/// The binding's alternative prefix, accepted on receive.
pub(crate) const CE_PREFIX_COLON: &str = "cloudEvents:";
/// Attempt number carried by a copy scheduled for delayed redelivery.
pub(crate) const ATTEMPT: &str = busway_core::redelivery::HEADER_ATTEMPT;
/// When the first delivery of a redelivered copy failed.
pub(crate) const FIRST_FAILURE: &str = busway_core::redelivery::HEADER_FIRST_FAILURE;
/// The one group a redelivered or redriven copy is meant for (matched by the group's rule).
pub(crate) const TARGET_GROUP: &str = "busway-group";
/// Set by Service Bus on dead-lettered messages.
pub(crate) const DEAD_LETTER_REASON: &str = "DeadLetterReason";
/// Set by Service Bus on dead-lettered messages.
pub(crate) const DEAD_LETTER_DESCRIPTION: &str = "DeadLetterErrorDescription";
/// Service Bus refuses longer MessageIds and SessionIds.
const MAX_ID_LEN: usize = 128;

/// Encodes `message` in binary mode.
pub(crate) fn encode(message: &Message) -> ServiceBusMessage {
    let mut sb = ServiceBusMessage::new(message.data().to_vec());
    // Ids Service Bus refuses (too long) are left out: the event still travels, only the
    // broker feature keyed on the id (duplicate detection, session) does not apply.
    if message.id().len() <= MAX_ID_LEN {
        let _ = sb.set_message_id(message.id());
    }
    if let Some(key) = message.partition_key().filter(|k| k.len() <= MAX_ID_LEN) {
        let _ = sb.set_session_id(key.to_owned());
    }
    if let Some(correlation) = message.correlation_id() {
        sb.set_correlation_id(correlation.to_owned());
    }
    sb.set_content_type(message.datacontenttype().map(str::to_owned));
    let mut props = OrderedMap::new();
    for (name, value) in wire::binary_attributes(message) {
        props.insert(format!("{CE_PREFIX}{name}"), SimpleValue::String(value));
    }
    *sb.application_properties_mut() = Some(ApplicationProperties(props));
    sb
}

/// Sets (or replaces) a string application property.
pub(crate) fn set_property(sb: &mut ServiceBusMessage, name: &str, value: String) {
    sb.application_properties_mut()
        .get_or_insert_with(|| ApplicationProperties(OrderedMap::new()))
        .0
        .insert(name.to_owned(), SimpleValue::String(value));
}

/// Encoded size of a message as the broker counts it.
pub(crate) fn encoded_size(sb: &ServiceBusMessage) -> usize {
    // The serialiser only fails on values AMQP cannot carry, which `encode` never produces;
    // fall back to an estimate rather than refuse.
    serde_amqp::serialized_size(&Serializable(sb.raw_amqp_message())).unwrap_or_else(|_| {
        sb.body().len()
            + sb.application_properties().map_or(0, |p| {
                p.0.iter()
                    .map(|(k, v)| k.len() + text(v).map_or(16, |s| s.len()) + 8)
                    .sum()
            })
            + 256
    })
}

/// A received (or peeked) Service Bus message, decoded.
pub(crate) struct Decoded {
    /// The event, or a stand-in carrying the raw body when it could not be decoded.
    pub(crate) message: Message,
    /// Why decoding failed.
    pub(crate) error: Option<String>,
    /// Attempt carried by a redelivered copy.
    pub(crate) carried_attempt: Option<u32>,
    /// First failure carried by a redelivered copy.
    pub(crate) first_failure: Option<DateTime<Utc>>,
}

/// Decodes a message as received from the broker.
pub(crate) fn decode(raw: &AmqpMessage<Body<Value>>) -> Decoded {
    let props = properties(raw);
    let carried_attempt = lookup(&props, ATTEMPT).and_then(|v| v.parse().ok());
    let first_failure = lookup(&props, FIRST_FAILURE)
        .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
        .map(|t| t.with_timezone(&Utc));
    let content_type = raw
        .properties
        .as_ref()
        .and_then(|p| p.content_type.as_ref())
        .map(|ct| ct.as_str().to_owned());
    let (message, error) = match body(raw) {
        Err(e) => (stand_in(raw, Bytes::new()), Some(e)),
        Ok(data) => {
            let decoded = if wire::is_structured(content_type.as_deref()) {
                wire::from_structured(&data)
            } else {
                wire::from_binary(
                    props.iter().map(|(k, v)| (k.as_str(), v.clone())),
                    &[CE_PREFIX, CE_PREFIX_COLON],
                    content_type,
                    data.clone(),
                )
            };
            match decoded {
                Ok(m) => (m, None),
                Err(e) => (stand_in(raw, data), Some(e.to_string())),
            }
        }
    };
    Decoded {
        message,
        error,
        carried_attempt,
        first_failure,
    }
}

/// The busway metadata of a dead letter, when busway dead-lettered it.
pub(crate) fn dead_letter_metadata(raw: &AmqpMessage<Body<Value>>) -> Option<DeadLetterMetadata> {
    let props = properties(raw);
    DeadLetterMetadata::from_headers(|name| lookup(&props, name))
}

/// A copy of a received message for sending again (redelivery, redrive): the same body,
/// properties and application properties, minus what the broker or busway set on the way.
pub(crate) fn resend_copy(raw: &AmqpMessage<Body<Value>>) -> Result<ServiceBusMessage> {
    let data = body(raw).map_err(Error::InvalidMessage)?;
    let mut sb = ServiceBusMessage::new(data.to_vec());
    let mut copy = sb.raw_amqp_message().clone();
    copy.properties = raw.properties.clone();
    if let Some(props) = copy.properties.as_mut() {
        // A fresh id, so duplicate detection does not drop the copy as a repeat of the original;
        // consumers read the event id from `cloudEvents_id`.
        props.message_id = Some(uuid::Uuid::new_v4().to_string().into());
    }
    copy.header = raw.header.clone().map(|mut h| {
        h.delivery_count = 0;
        h
    });
    let skip = |name: &str| {
        name.starts_with("busway-dlq-")
            || RedeliveryHeaders::is_header(name)
            || matches!(
                name,
                TARGET_GROUP | DEAD_LETTER_REASON | DEAD_LETTER_DESCRIPTION
            )
    };
    copy.application_properties = raw.application_properties.as_ref().map(|p| {
        ApplicationProperties(
            p.0.iter()
                .filter(|(k, _)| !skip(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    });
    sb = ServiceBusMessage::from_raw_amqp_message(copy);
    Ok(sb)
}

/// Application properties as text (non-string values in their display form).
pub(crate) fn properties(raw: &AmqpMessage<Body<Value>>) -> Vec<(String, String)> {
    raw.application_properties
        .as_ref()
        .map(|p| {
            p.0.iter()
                .filter_map(|(k, v)| text(v).map(|t| (k.clone(), t.into_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn lookup(props: &[(String, String)], name: &str) -> Option<String> {
    props
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// A property value as text; timestamps (the binding's type for `time`) in RFC 3339.
fn text(value: &SimpleValue) -> Option<Cow<'_, str>> {
    Some(match value {
        SimpleValue::String(s) => Cow::Borrowed(s.as_str()),
        SimpleValue::Symbol(s) => Cow::Borrowed(s.as_str()),
        SimpleValue::Bool(b) => Cow::Owned(b.to_string()),
        SimpleValue::Ubyte(n) => Cow::Owned(n.to_string()),
        SimpleValue::Ushort(n) => Cow::Owned(n.to_string()),
        SimpleValue::Uint(n) => Cow::Owned(n.to_string()),
        SimpleValue::Ulong(n) => Cow::Owned(n.to_string()),
        SimpleValue::Byte(n) => Cow::Owned(n.to_string()),
        SimpleValue::Short(n) => Cow::Owned(n.to_string()),
        SimpleValue::Int(n) => Cow::Owned(n.to_string()),
        SimpleValue::Long(n) => Cow::Owned(n.to_string()),
        SimpleValue::Uuid(u) => Cow::Owned(uuid::Uuid::from_bytes(*u.as_inner()).to_string()),
        SimpleValue::Timestamp(t) => {
            let time = DateTime::<Utc>::from_timestamp_millis(t.milliseconds())?;
            Cow::Owned(busway_core::message::format_time(time))
        }
        _ => return None,
    })
}

/// The body as bytes: one Data section (what every Service Bus client sends), or an AMQP value
/// holding a string or binary (what some older clients send).
fn body(raw: &AmqpMessage<Body<Value>>) -> std::result::Result<Bytes, String> {
    match &raw.body {
        Body::Data(batch) if batch.len() == 1 => Ok(Bytes::copy_from_slice(&batch[0].0)),
        Body::Data(batch) => Ok(Bytes::from(
            batch
                .iter()
                .flat_map(|d| d.0.iter().copied())
                .collect::<Vec<u8>>(),
        )),
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => Ok(Bytes::copy_from_slice(b)),
            Value::String(s) => Ok(Bytes::from(s.clone().into_bytes())),
            other => Err(format!(
                "the message body is an AMQP value of an unsupported type ({other:?})"
            )),
        },
        Body::Empty => Ok(Bytes::new()),
        Body::Sequence(_) => Err("the message body is an AMQP sequence".into()),
    }
}

/// What an undecodable message looks like to the runtime: busway-core's stand-in with the raw
/// body and the broker's message id, so the handler is skipped and the original is
/// dead-lettered unchanged.
fn stand_in(raw: &AmqpMessage<Body<Value>>, data: Bytes) -> Message {
    let id = raw
        .properties
        .as_ref()
        .and_then(|p| p.message_id.as_ref())
        .map(|id| match id {
            MessageId::String(s) => s.clone(),
            MessageId::Ulong(n) => n.to_string(),
            MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
            MessageId::Binary(b) => format!("{:02x?}", &b[..]),
        });
    Message::undecodable(data, id.as_deref())
}

/// A message as a receiver sees it after `sb` was sent: the same sections, the body as one Data
/// section (what the broker delivers for a message a client sent).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn as_received(sb: &ServiceBusMessage) -> AmqpMessage<Body<Value>> {
    use fe2o3_amqp_types::messaging::{Batch, Data};
    let m = sb.raw_amqp_message().clone();
    AmqpMessage {
        header: m.header,
        delivery_annotations: m.delivery_annotations,
        message_annotations: m.message_annotations,
        properties: m.properties,
        application_properties: m.application_properties,
        body: Body::Data(Batch::new(vec![Data(m.body.0)])),
        footer: m.footer,
    }
}

/// Properties-to-modify of a dead-lettering: the standard busway metadata.
pub(crate) fn dead_letter_properties(meta: &DeadLetterMetadata) -> OrderedMap<String, Value> {
    meta.to_headers()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect()
}

/// Service Bus caps DeadLetterErrorDescription; keep within it.
pub(crate) fn description(error: &str) -> String {
    dead_letter::truncate(error, dead_letter::MAX_ERROR_LEN).to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn received(sb: &ServiceBusMessage) -> AmqpMessage<Body<Value>> {
        as_received(sb)
    }

    #[test]
    fn binary_mode_round_trips_and_fills_system_properties() {
        let m = Message::builder("/shop", "order.placed")
            .partition_key("c-1")
            .correlation_id("corr")
            .subject("s")
            .datacontenttype("text/plain")
            .data("hi")
            .build()
            .unwrap();
        let sb = encode(&m);
        assert_eq!(sb.message_id().unwrap(), m.id());
        assert_eq!(sb.session_id(), Some("c-1"));
        assert_eq!(sb.content_type(), Some("text/plain"));
        let back = decode(&received(&sb));
        assert!(back.error.is_none(), "{:?}", back.error);
        assert_eq!(back.message, m);
        assert!(encoded_size(&sb) > 2);
    }

    #[test]
    fn foreign_messages_are_flagged_not_lost() {
        let sb = ServiceBusMessage::new(b"raw".to_vec());
        let d = decode(&received(&sb));
        assert!(d.error.is_some());
        assert_eq!(d.message.data().as_ref(), b"raw");
    }

    #[test]
    fn copies_lose_broker_and_busway_bookkeeping() {
        let mut sb = encode(&Message::builder("/s", "t").build().unwrap());
        set_property(&mut sb, ATTEMPT, "3".into());
        set_property(&mut sb, DEAD_LETTER_REASON, "x".into());
        let raw = received(&sb);
        assert_eq!(decode(&raw).carried_attempt, Some(3));
        let copy = resend_copy(&raw).unwrap();
        let props = copy.application_properties().unwrap();
        assert!(props.0.get(ATTEMPT).is_none());
        assert!(props.0.get(DEAD_LETTER_REASON).is_none());
        assert_ne!(copy.message_id(), sb.message_id());
    }
}
