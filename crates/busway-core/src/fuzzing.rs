//! What the adapters' fuzzing entry points share: the CloudEvents values and JSON members
//! every decoder looks for, and generators biased towards them, so that fuzzer inputs get past
//! the first missing attribute. Behind the `fuzzing` feature; not part of the API.

// A broken invariant must panic here: that is how the fuzzer sees it.
#![allow(clippy::panic)]

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value};

/// Attribute values worth trying, besides arbitrary bytes: versions, times at and past the
/// edges of what chrono reads, content types, numbers at integer boundaries (attempt counts,
/// epoch milliseconds) and busway's dead-letter reasons.
pub const VALUES: &[&str] = &[
    "1.0",
    "0.3",
    "",
    "id-1",
    "urn:source",
    "com.example.type",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00.123456789+02:00",
    "1970-01-01T00:00:00Z",
    "+262142-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999999Z",
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents+json; charset=utf-8",
    "text/plain",
    "3",
    "0",
    "-1",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "1767225600000",
    "-9223372036854775808",
    "not a time",
    "max_attempts_exceeded",
    "handler_panicked",
];

/// JSON member names of a structured event (and the CloudEvents attribute names).
pub const MEMBERS: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "dataschema",
    "datacontenttype",
    "data",
    "data_base64",
    "partitionkey",
    "correlationid",
    "traceparent",
    "tenant",
    "Bad-Name",
];

/// One of `list` most of the time, otherwise an arbitrary string.
pub fn pick(u: &mut Unstructured<'_>, list: &[&str]) -> arbitrary::Result<String> {
    if u.ratio(3, 4)? {
        Ok(list[u.choose_index(list.len())?].to_owned())
    } else {
        String::arbitrary(u)
    }
}

/// One of [`VALUES`] as bytes most of the time, otherwise arbitrary bytes.
pub fn pick_bytes(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    if u.ratio(2, 3)? {
        Ok(pick(u, VALUES)?.into_bytes())
    } else {
        Vec::<u8>::arbitrary(u)
    }
}

/// Any JSON value, nested at most three deep, its strings mostly from [`VALUES`].
pub fn json_value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=6)? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => Value::from(i64::arbitrary(u)?),
        3 => serde_json::Number::from_f64(f64::arbitrary(u)?).map_or(Value::Null, Value::Number),
        4 if depth < 3 => {
            let mut items = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                items.push(json_value(u, depth + 1)?);
            }
            Value::Array(items)
        }
        5 if depth < 3 => json_object(u, depth + 1)?,
        _ => Value::String(pick(u, VALUES)?),
    })
}

/// A JSON object whose members are mostly from [`MEMBERS`]; at the top (`depth` 0) it usually
/// starts with the four required CloudEvents attributes, so that a structured event's decoder
/// reaches the optional ones and the data.
pub fn json_object(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let mut obj = Map::new();
    if depth == 0 && u.ratio(3, 4)? {
        for (k, v) in [
            ("specversion", "1.0"),
            ("id", "id-1"),
            ("source", "urn:s"),
            ("type", "t"),
        ] {
            obj.insert(k.into(), Value::String(v.into()));
        }
    }
    for _ in 0..u.int_in_range(0..=8)? {
        let name = pick(u, MEMBERS)?;
        let value = json_value(u, depth)?;
        obj.insert(name, value);
    }
    Ok(Value::Object(obj))
}

/// Whether busway refuses to publish `message` as it is (a decoded message can carry what the
/// publish check does not allow, such as a `datacontenttype` that binary mode cannot carry),
/// in which case no encode → decode round trip is owed. The refusal must say why.
pub fn refused_for_publishing(message: &crate::Message) -> bool {
    match crate::preflight::check_binary_mode(message) {
        Ok(()) => false,
        Err(e) => {
            assert!(
                matches!(e, crate::Error::InvalidMessage(_))
                    && e.to_string().contains("datacontenttype"),
                "an unclear refusal: {e}"
            );
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_cope_with_short_and_empty_input() {
        for data in [&[][..], &[0xff; 7][..], &[0x00, 0x01, 0x02, 0x03][..]] {
            let mut u = Unstructured::new(data);
            assert!(json_object(&mut u, 0).is_ok_and(|v| v.is_object()));
        }
    }

    #[test]
    fn a_top_level_object_usually_carries_the_required_attributes() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut u = Unstructured::new(&data);
        let mut with_required = 0;
        for _ in 0..64 {
            let Ok(Value::Object(obj)) = json_object(&mut u, 0) else {
                break;
            };
            if ["specversion", "id", "source", "type"]
                .iter()
                .all(|k| obj.contains_key(*k))
            {
                with_required += 1;
            }
        }
        assert!(with_required > 0, "no object had the required attributes");
    }
}
