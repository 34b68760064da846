//! Entry points for fuzzing what a peer controls: the record decoder (headers, key and value
//! into a [`Message`], binary and structured mode, and busway's own headers on the way).
//!
//! Each function takes raw fuzzer bytes, builds the broker-native structure from them with
//! [`arbitrary`] (biased towards the names and values the decoder looks for) and runs the real
//! decode path, asserting its invariants. Not part of the API.

// A broken invariant must panic here: that is how the fuzzer sees it.
#![allow(clippy::expect_used, clippy::panic)]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use busway_core::fuzzing::{VALUES, json_object, pick, pick_bytes, refused_for_publishing};
use busway_core::{DeadLetterMetadata, Message, wire};

use crate::codec::{InRecord, OutRecord, RecordHeader};

/// Header names the decoder reads, besides arbitrary ones: the broker's own, then busway's
/// (taken from busway-core, so that the fuzzer follows a renamed header).
static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut names = vec![
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "ce_dataschema",
        "ce_datacontenttype",
        "ce_partitionkey",
        "ce_traceparent",
        "ce_tenant",
        "ce_",
        "ce_Bad-Name",
        "content-type",
    ];
    names.extend(wire::BUSWAY_HEADERS);
    names
});

/// A consumed record built from fuzzer bytes.
fn record(u: &mut Unstructured<'_>) -> arbitrary::Result<InRecord> {
    let structured = u.ratio(1, 4)?;
    let mut headers: Vec<RecordHeader> = Vec::new();
    if structured {
        headers.push((
            "content-type".into(),
            Some(b"application/cloudevents+json".to_vec()),
        ));
    } else if u.ratio(3, 4)? {
        for (k, v) in [
            ("ce_specversion", "1.0"),
            ("ce_id", "id-1"),
            ("ce_source", "urn:s"),
            ("ce_type", "t"),
        ] {
            headers.push((k.into(), Some(v.as_bytes().to_vec())));
        }
    }
    let n = u.int_in_range(0..=10)?;
    for _ in 0..n {
        let name = pick(u, &NAMES)?;
        let value = if u.ratio(1, 10)? {
            None
        } else {
            Some(pick_bytes(u)?)
        };
        headers.push((name, value));
    }
    let key = match u.int_in_range(0..=3)? {
        0 => None,
        1 => Some(Vec::<u8>::arbitrary(u)?),
        _ => Some(pick(u, VALUES)?.into_bytes()),
    };
    let value = if structured && u.ratio(7, 8)? {
        let mut body = serde_json::to_vec(&json_object(u, 0)?).unwrap_or_default();
        if u.ratio(1, 16)? {
            body.extend(Vec::<u8>::arbitrary(u)?);
        }
        body
    } else {
        Vec::<u8>::arbitrary(u)?
    };
    Ok(InRecord {
        topic: "fuzz".into(),
        partition: 0,
        offset: i64::arbitrary(u)?,
        key,
        value: value.into(),
        headers,
        timestamp: Option::<i64>::arbitrary(u)?,
    })
}

/// Decodes a Kafka record built from `data`, as a consumer would, and checks:
/// - nothing panics (decoding, the redelivery headers, the dead-letter metadata);
/// - an undecodable record still has its placeholder, so it can be dead-lettered;
/// - the copy busway would produce for a redelivery or dead letter decodes as the original;
/// - a decoded message validates, and encodes and decodes back to itself (unless its own
///   `datacontenttype` announces structured mode, which the binding cannot tell apart);
/// - the record key of a decoded message's encoding is its partition key.
pub fn decode_record(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(record) = record(&mut u) else {
        return;
    };
    check(&record);
}

fn check(record: &InRecord) {
    let decoded = record.decode();
    assert!(record.attempt() >= 1);
    let _ = record.first_failure();
    let _ = record.due_millis();
    let _ = record.is_before_group(0);
    let _ = record.size();
    let _ = DeadLetterMetadata::from_headers(|k| record.header(k).map(str::to_owned));
    assert!(
        record.placeholder().validate().is_ok(),
        "an undecodable record must still be representable"
    );

    let copy = record.original();
    let _ = copy.size();
    let copy = copy.as_consumed(&record.topic, record.partition, record.offset);
    assert!(
        copy.headers.iter().all(|(k, _)| !k.starts_with("busway-")),
        "a copy carries none of busway's old headers"
    );
    // The same message, or an error for both: which of several bad headers an error names
    // depends on header order, which a copy does not keep for busway's own headers.
    match (&copy.decode(), &decoded) {
        (Ok(a), Ok(b)) => assert_eq!(
            a, b,
            "a redelivery or dead-letter copy decodes differently from the original"
        ),
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "a redelivery or dead-letter copy decodes differently from the original: {a:?} / {b:?}"
        ),
    }

    let Ok(message) = decoded else {
        return;
    };
    message.validate().expect("a decoded message must validate");
    let encoded = OutRecord::from_message(&message);
    assert_eq!(
        encoded.key.as_deref(),
        message.partition_key().map(str::as_bytes),
        "the record key is the partition key"
    );
    if refused_for_publishing(&message) {
        return;
    }
    let again = encoded
        .as_consumed("fuzz", 0, 0)
        .decode()
        .expect("an encoded message decodes");
    assert_eq!(again, message, "encode then decode changed the message");
    let _: &Message = &again;
}
