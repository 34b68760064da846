//! Entry points for fuzzing what a broker or another client controls: a delivery's AMQP
//! properties and body, read into a [`Message`] (binary and structured mode, native
//! properties, foreign header types), and busway's own headers on the way (attempt, first
//! failure, dead-letter metadata).
//!
//! The properties are built from the fuzzer's bytes with [`arbitrary`] (biased towards the
//! names and values the decoder looks for) rather than parsed from a content-header frame:
//! lapin parses frames before busway sees them, and the properties are what busway's decoder
//! receives. Not part of the API.

// A broken invariant must panic here: that is how the fuzzer sees it.
#![allow(clippy::expect_used, clippy::panic)]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use busway_core::dead_letter::{DeadLetterMetadata, DeadLetterReason};
use busway_core::fuzzing::{VALUES, json_object, pick, pick_bytes, refused_for_publishing};
use busway_core::redelivery::RedeliveryHeaders;
use busway_core::{Message, wire};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};

use crate::codec;

/// Header names the decoder reads, besides arbitrary ones: the broker's own, then busway's
/// (taken from busway-core, so that the fuzzer follows a renamed header).
static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut names = vec![
        "cloudEvents_specversion",
        "cloudEvents_id",
        "cloudEvents_source",
        "cloudEvents_type",
        "cloudEvents_time",
        "cloudEvents_subject",
        "cloudEvents_dataschema",
        "cloudEvents_datacontenttype",
        "cloudEvents_partitionkey",
        "cloudEvents_correlationid",
        "cloudEvents_tenant",
        "cloudEvents_",
        "cloudEvents_Bad-Name",
        "cloudEvents:id",
        "cloudEvents:type",
        "cloudEvents:source",
        "cloudEvents:time",
        "x-delivery-count",
        "x-death",
        "x-first-death-queue",
        "x-last-death-reason",
    ];
    names.extend(wire::BUSWAY_HEADERS);
    names
});

/// A short string (at most 255 bytes, as AMQP allows), or nothing when the pick is longer.
fn short(u: &mut Unstructured<'_>, list: &[&str]) -> arbitrary::Result<Option<ShortString>> {
    Ok(ShortString::try_new(pick(u, list)?).ok())
}

/// A header value of any AMQP type, nested at most `depth` more levels.
fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<AMQPValue> {
    Ok(match u.int_in_range(0..=17)? {
        0 => AMQPValue::Boolean(bool::arbitrary(u)?),
        1 => AMQPValue::ShortShortInt(i8::arbitrary(u)?),
        2 => AMQPValue::ShortShortUInt(u8::arbitrary(u)?),
        3 => AMQPValue::ShortInt(i16::arbitrary(u)?),
        4 => AMQPValue::ShortUInt(u16::arbitrary(u)?),
        5 => AMQPValue::LongInt(i32::arbitrary(u)?),
        6 => AMQPValue::LongUInt(u32::arbitrary(u)?),
        7 => AMQPValue::LongLongInt(i64::arbitrary(u)?),
        8 => AMQPValue::Float(f32::arbitrary(u)?),
        9 => AMQPValue::Double(f64::arbitrary(u)?),
        10 => AMQPValue::DecimalValue(DecimalValue {
            scale: u8::arbitrary(u)?,
            value: u32::arbitrary(u)?,
        }),
        11 => AMQPValue::Timestamp(u64::arbitrary(u)?),
        12 => AMQPValue::ByteArray(ByteArray::from(Vec::<u8>::arbitrary(u)?)),
        13 => AMQPValue::Void,
        14 => match short(u, VALUES)? {
            Some(s) => AMQPValue::ShortString(s),
            None => AMQPValue::Void,
        },
        15 if depth > 0 => {
            let mut items = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                items.push(value(u, depth - 1)?);
            }
            AMQPValue::FieldArray(FieldArray::from(items))
        }
        16 if depth > 0 => AMQPValue::FieldTable(table(u, depth - 1, 3)?),
        _ => AMQPValue::LongString(LongString::from(pick_bytes(u)?)),
    })
}

fn table(u: &mut Unstructured<'_>, depth: u32, max: u32) -> arbitrary::Result<FieldTable> {
    let mut table = FieldTable::default();
    for _ in 0..u.int_in_range(0..=max)? {
        if let Some(name) = short(u, &NAMES)? {
            table.insert(name, value(u, depth)?);
        }
    }
    Ok(table)
}

/// A delivery as lapin hands it to busway: properties, the `redelivered` flag and the body.
struct Delivery {
    properties: BasicProperties,
    redelivered: bool,
    body: Bytes,
}

fn delivery(u: &mut Unstructured<'_>) -> arbitrary::Result<Delivery> {
    let structured = u.ratio(1, 4)?;
    let mut props = BasicProperties::default();
    if structured {
        props = props.with_content_type(wire::STRUCTURED_CONTENT_TYPE.into());
    } else if let Some(ct) = Option::<()>::arbitrary(u)?.and(short(u, VALUES)?) {
        props = props.with_content_type(ct);
    }
    if let Some(id) = Option::<()>::arbitrary(u)?.and(short(u, VALUES)?) {
        props = props.with_message_id(id);
    }
    if let Some(ty) = Option::<()>::arbitrary(u)?.and(short(u, VALUES)?) {
        props = props.with_type(ty);
    }
    if let Some(app) = Option::<()>::arbitrary(u)?.and(short(u, VALUES)?) {
        props = props.with_app_id(app);
    }
    if let Some(corr) = Option::<()>::arbitrary(u)?.and(short(u, VALUES)?) {
        props = props.with_correlation_id(corr);
    }
    if let Some(ts) = Option::<u64>::arbitrary(u)? {
        props = props.with_timestamp(ts);
    }
    if let Some(mode) = Option::<u8>::arbitrary(u)? {
        props = props.with_delivery_mode(mode);
    }
    let mut headers = FieldTable::default();
    if !structured && u.ratio(3, 4)? {
        for (k, v) in [
            ("cloudEvents_specversion", "1.0"),
            ("cloudEvents_id", "id-1"),
            ("cloudEvents_source", "urn:s"),
            ("cloudEvents_type", "t"),
        ] {
            headers.insert(k.into(), AMQPValue::LongString(v.into()));
        }
    }
    for (name, value) in table(u, 2, 10)?.inner() {
        headers.insert(name.clone(), value.clone());
    }
    if u.ratio(7, 8)? {
        props = props.with_headers(headers);
    }
    let body = if structured && u.ratio(7, 8)? {
        let mut body = serde_json::to_vec(&json_object(u, 0)?).unwrap_or_default();
        if u.ratio(1, 16)? {
            body.extend(Vec::<u8>::arbitrary(u)?);
        }
        body
    } else {
        Vec::<u8>::arbitrary(u)?
    };
    Ok(Delivery {
        properties: props,
        redelivered: bool::arbitrary(u)?,
        body: Bytes::from(body),
    })
}

/// A time the fuzzer cannot make unrepresentable, for the copies' metadata.
fn fixed_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_767_225_600, 123_456_789).unwrap_or_default()
}

/// Decodes a delivery built from `data` as a subscription would, and checks:
/// - nothing panics (decoding, the attempt and first failure, the dead-letter metadata);
/// - the attempt is at least 1, and an undecodable delivery still has its placeholder;
/// - the content-header size busway computes is the one AMQP encodes (the publish and copy
///   checks rely on it);
/// - a redelivery copy carries exactly the attempt and first failure it was given, and a
///   redelivery or dead-letter copy decodes as the original did;
/// - a decoded message validates, and encodes and decodes back to itself (unless its own
///   `datacontenttype` announces structured mode, which binary mode cannot tell apart).
pub fn decode_delivery(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(delivery) = delivery(&mut u) else {
        return;
    };
    check(&delivery);
}

fn check(d: &Delivery) {
    let props = &d.properties;
    let decoded = codec::decode(props, d.body.clone(), "fuzz");
    let (attempt, first_failure) = codec::attempt_of(props, d.redelivered);
    assert!(attempt >= 1, "attempt {attempt}");
    let stand_in = Message::undecodable(d.body.clone(), codec::message_id(props));
    assert!(stand_in.validate().is_ok(), "{stand_in:?}");
    let _ = DeadLetterMetadata::from_headers(|k| codec::header(props, k));
    assert_eq!(
        codec::header_frame_len(props),
        encoded_header_len(props),
        "the content-header size busway computes is not AMQP's: {props:?}"
    );

    let next = RedeliveryHeaders {
        attempt: attempt.saturating_add(1),
        first_failure: first_failure.unwrap_or_else(fixed_time),
        due: None,
    };
    let copy = codec::redelivery_copy(props, &next);
    assert_eq!(
        codec::attempt_of(&copy, false),
        (next.attempt, Some(next.first_failure)),
        "a redelivery copy does not carry what it was given"
    );
    same_decoding(&copy, d, &decoded, "redelivery");

    let metadata = DeadLetterMetadata {
        reason: DeadLetterReason::MaxAttemptsExceeded,
        error: "fuzz".into(),
        original_topic: "fuzz".into(),
        group: "g".into(),
        attempts: attempt,
        first_failure: next.first_failure,
        last_failure: fixed_time(),
    };
    let dead = codec::dead_letter_copy(props, &metadata);
    let read = DeadLetterMetadata::from_headers(|k| codec::header(&dead, k))
        .expect("a dead letter carries its metadata");
    assert_eq!(
        read, metadata,
        "the dead-letter metadata does not read back"
    );
    same_decoding(&dead, d, &decoded, "dead-letter");

    let Ok(message) = decoded else {
        return;
    };
    message.validate().expect("a decoded message must validate");
    let encoded = match codec::encode(&message) {
        Ok(encoded) => encoded,
        // AMQP header names are short strings: an extension named too long for one (a
        // structured-mode event may have it) is refused, clearly, and nothing else is.
        Err(busway_core::Error::InvalidMessage(reason))
            if message.extensions().keys().any(|name| {
                codec::HEADER_PREFIX.len() + name.len() > codec::MAX_HEADER_NAME_BYTES
            }) && reason.contains("too long for an AMQP header") =>
        {
            return;
        }
        Err(e) => panic!("a decoded message does not encode: {e}: {message:?}"),
    };
    if refused_for_publishing(&message) {
        return;
    }
    let again = codec::decode(&encoded, message.data().clone(), "fuzz")
        .expect("an encoded message decodes");
    assert_eq!(again, message, "encode then decode changed the message");
}

/// The same message, or an error for both.
fn same_decoding(
    copy: &BasicProperties,
    d: &Delivery,
    original: &busway_core::Result<busway_core::Message>,
    what: &str,
) {
    match (&codec::decode(copy, d.body.clone(), "fuzz"), original) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "a {what} copy decodes differently"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("a {what} copy decodes differently: {a:?} / {b:?}"),
    }
}

/// The size AMQP's own encoder (amq-protocol, behind lapin) gives the properties, plus the
/// content header's class, weight and body size.
fn encoded_header_len(props: &BasicProperties) -> usize {
    let bytes =
        cookie_factory::gen_simple(lapin::protocol::basic::gen_properties(props), Vec::new())
            .expect("properties encode");
    2 + 2 + 8 + bytes.len()
}
