//! CloudEvents wire modes shared by every adapter.
//!
//! Binary mode puts each attribute in a broker header under a binding-specific prefix (`ce_` for
//! Kafka, `cloudEvents_` for AMQP) and `datacontenttype` in the broker's native content-type; the
//! data is the body, untouched. Structured mode (`application/cloudevents+json`) puts the whole
//! event in the body. Adapters own the prefix and the header types; the mapping lives here once.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::message::{Message, parse_time};
use crate::{dead_letter, redelivery};

/// Content type of a structured-mode CloudEvent in JSON.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// Every header busway itself writes next to a message: the redelivery headers, then the
/// dead-letter metadata (for adapters and fuzzers that list busway's own).
pub const BUSWAY_HEADERS: [&str; 10] = [
    redelivery::HEADER_ATTEMPT,
    redelivery::HEADER_FIRST_FAILURE,
    redelivery::HEADER_DUE,
    dead_letter::HEADER_REASON,
    dead_letter::HEADER_ERROR,
    dead_letter::HEADER_TOPIC,
    dead_letter::HEADER_GROUP,
    dead_letter::HEADER_ATTEMPTS,
    dead_letter::HEADER_FIRST_FAILURE,
    dead_letter::HEADER_LAST_FAILURE,
];

/// Whether a content type announces a structured-mode JSON event (parameters ignored).
pub fn is_structured(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case(STRUCTURED_CONTENT_TYPE))
}

/// Whether a content type names a CloudEvents event format (`application/cloudevents…`, e.g.
/// `application/cloudevents+json`). The protocol bindings tell a receiver to read a message with
/// such a content type in structured mode, so data of that type cannot travel in binary mode:
/// the receiver would take the data for the event. The publish check refuses it
/// ([`SizeLimit::check`](crate::preflight::SizeLimit::check)).
pub fn is_event_format(content_type: Option<&str>) -> bool {
    const PREFIX: &str = "application/cloudevents";
    content_type.is_some_and(|ct| {
        let ct = ct.trim_start();
        ct.get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
    })
}

/// The attributes of `message` as (name, value) pairs for binary mode, without prefix and without
/// `datacontenttype` (which bindings carry in the native content type).
pub fn binary_attributes(message: &Message) -> Vec<(String, String)> {
    let mut attrs = vec![
        ("specversion".to_owned(), message.specversion().to_owned()),
        ("id".to_owned(), message.id().to_owned()),
        ("source".to_owned(), message.source().to_owned()),
        ("type".to_owned(), message.ty().to_owned()),
    ];
    let optional = [
        ("dataschema", message.dataschema().map(str::to_owned)),
        ("subject", message.subject().map(str::to_owned)),
        ("time", message.time_rfc3339()),
    ];
    attrs.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v))),
    );
    attrs.extend(
        message
            .extensions()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    attrs
}

/// Rebuilds a message from binary-mode headers.
///
/// `headers` are every header of the broker message; those starting with one of `prefixes` are
/// CloudEvents attributes, the rest are ignored. Missing required attributes are an
/// [`Error::InvalidMessage`] naming them.
pub fn from_binary<'a>(
    headers: impl IntoIterator<Item = (&'a str, String)>,
    prefixes: &[&str],
    content_type: Option<String>,
    data: Bytes,
) -> Result<Message> {
    let mut attrs: Vec<(String, String)> = headers
        .into_iter()
        .filter_map(|(name, value)| {
            prefixes
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .map(|attr| (attr.to_owned(), value))
        })
        .collect();
    let mut take = |name: &str| {
        attrs
            .iter()
            .position(|(k, _)| k == name)
            .map(|i| attrs.swap_remove(i).1)
    };
    let id = take("id");
    let source = take("source");
    let ty = take("type");
    let specversion = take("specversion");
    let (Some(id), Some(source), Some(ty), Some(specversion)) = (id, source, ty, specversion)
    else {
        return Err(Error::InvalidMessage(
            "binary-mode CloudEvent lacks one of the required attributes id, source, type, specversion".into(),
        ));
    };
    let mut builder = Message::from_wire(id, source, ty)
        .specversion(specversion)
        .data(data);
    // Structured-mode content type is never the data's own; binary mode keeps what was sent.
    if let Some(ct) = content_type.filter(|ct| !ct.is_empty()) {
        builder = builder.datacontenttype(ct);
    }
    if let Some(v) = take("datacontenttype") {
        builder = builder.datacontenttype(v);
    }
    if let Some(v) = take("dataschema") {
        builder = builder.dataschema(v);
    }
    if let Some(v) = take("subject") {
        builder = builder.subject(v);
    }
    if let Some(v) = take("time") {
        builder = match parse_time(&v) {
            Ok(t) => builder.time(t),
            Err(e) => builder.fail(e),
        };
    }
    for (name, value) in attrs {
        builder = builder.extension(name, value);
    }
    builder.build()
}

/// Encodes `message` as a structured-mode JSON CloudEvent.
///
/// JSON data is embedded as `data`; any other data as `data_base64`.
pub fn to_structured(message: &Message) -> Result<Vec<u8>> {
    let mut obj = Map::new();
    for (k, v) in binary_attributes(message) {
        obj.insert(k, Value::String(v));
    }
    if let Some(ct) = message.datacontenttype() {
        obj.insert("datacontenttype".into(), Value::String(ct.to_owned()));
    }
    if !message.data().is_empty() {
        let json_data = is_json(message.datacontenttype())
            .then(|| serde_json::from_slice::<Value>(message.data()).ok())
            .flatten();
        match json_data {
            Some(v) => obj.insert("data".into(), v),
            None => obj.insert(
                "data_base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(message.data())),
            ),
        };
    }
    serde_json::to_vec(&Value::Object(obj))
        .map_err(|e| Error::serialization("structured CloudEvent cannot be encoded", e))
}

/// Decodes a structured-mode JSON CloudEvent.
pub fn from_structured(body: &[u8]) -> Result<Message> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::serialization("structured CloudEvent is not JSON", e))?;
    let Value::Object(mut obj) = value else {
        return Err(Error::InvalidMessage(
            "structured CloudEvent must be a JSON object".into(),
        ));
    };
    let data = match (obj.remove("data"), obj.remove("data_base64")) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidMessage(
                "structured CloudEvent has both `data` and `data_base64`".into(),
            ));
        }
        (None, Some(Value::String(b64))) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| Error::serialization("`data_base64` is not base64", e))?,
        ),
        (None, Some(_)) => {
            return Err(Error::InvalidMessage(
                "`data_base64` must be a string".into(),
            ));
        }
        // A JSON string under a non-JSON content type is the text itself.
        (Some(Value::String(s)), None)
            if !is_json(obj.get("datacontenttype").and_then(Value::as_str)) =>
        {
            Bytes::from(s)
        }
        (Some(v), None) => Bytes::from(
            serde_json::to_vec(&v)
                .map_err(|e| Error::serialization("`data` cannot be re-encoded", e))?,
        ),
        (None, None) => Bytes::new(),
    };
    let attrs: Vec<(String, String)> = obj
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    from_binary(
        attrs.iter().map(|(k, v)| (k.as_str(), v.clone())),
        &[""],
        None,
        data,
    )
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .is_some_and(|ct| ct == "application/json" || ct == "text/json" || ct.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn busway_headers_are_the_redelivery_and_dead_letter_ones() {
        let mut listed: Vec<&str> = BUSWAY_HEADERS.to_vec();
        listed.sort_unstable();
        let mut own: Vec<&str> = redelivery::HEADERS
            .into_iter()
            .chain(dead_letter::HEADERS)
            .collect();
        own.sort_unstable();
        assert_eq!(listed, own);
    }

    fn full_message() -> Message {
        Message::builder("/shop", "order.placed")
            .subject("order/1")
            .dataschema("urn:schema:order:1")
            .partition_key("k1")
            .extension(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .json(&serde_json::json!({"n": 1, "s": "x"}))
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn binary_mode_round_trips_every_attribute() {
        let m = full_message();
        let headers: Vec<(String, String)> = binary_attributes(&m)
            .into_iter()
            .map(|(k, v)| (format!("ce_{k}"), v))
            .chain([("other".to_owned(), "ignored".to_owned())])
            .collect();
        let back = from_binary(
            headers.iter().map(|(k, v)| (k.as_str(), v.clone())),
            &["ce_"],
            m.datacontenttype().map(str::to_owned),
            m.data().clone(),
        )
        .unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn binary_mode_missing_required_attribute_is_invalid() {
        let err =
            from_binary([("ce_id", "1".to_owned())], &["ce_"], None, Bytes::new()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidMessage);
    }

    #[test]
    fn structured_mode_round_trips_json_and_binary_data() {
        let m = full_message();
        assert_eq!(from_structured(&to_structured(&m).unwrap()).unwrap(), m);
        let bin = Message::builder("/s", "t")
            .datacontenttype("application/octet-stream")
            .data(vec![0u8, 159, 146, 150])
            .build()
            .unwrap();
        let encoded = to_structured(&bin).unwrap();
        assert!(String::from_utf8_lossy(&encoded).contains("data_base64"));
        assert_eq!(from_structured(&encoded).unwrap(), bin);
    }

    #[test]
    fn structured_mode_reads_foreign_events() {
        let body = br#"{"specversion":"1.0","id":"A-1","source":"urn:x","type":"t",
            "datacontenttype":"text/plain","data":"hello","count":3}"#;
        let m = from_structured(body).unwrap();
        assert_eq!(m.data().as_ref(), b"hello");
        assert_eq!(m.extension("count"), Some("3"));
        assert!(m.time().is_none());
        assert!(is_structured(Some(
            "application/cloudevents+json; charset=utf-8"
        )));
    }
}
