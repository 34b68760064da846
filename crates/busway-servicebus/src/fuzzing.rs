//! Entry points for fuzz targets: the decoder of messages Service Bus hands the adapter, which
//! a peer (any client sending to the topic) controls byte for byte.
//!
//! Each function builds an AMQP message (application properties, properties, body) from the
//! fuzzer's bytes, runs the adapter's real decode path on it, and asserts its invariants: no
//! panic; a message decoded without error validates and survives encode → decode unchanged; an
//! undecodable one still yields a valid stand-in carrying the body; the copy and dead-letter
//! helpers cope with whatever was received.

use arbitrary::{Result, Unstructured};
use azservicebus::ServiceBusMessage;
use busway_core::fuzzing::{MEMBERS, json_object, refused_for_publishing};
use busway_core::wire;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Batch, Body, Data, Message as AmqpMessage, MessageId,
    Properties,
};
use fe2o3_amqp_types::primitives::{Binary, OrderedMap, SimpleValue, Timestamp, Value};

use crate::codec;

/// Binary mode: `cloudEvents_*` / `cloudEvents:*` application properties of any AMQP type, a
/// content type, and any body section.
pub fn decode_binary(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok(raw) = binary_message(&mut u) {
        check(&raw);
    }
}

/// Structured mode: `application/cloudevents+json` with a body that is a JSON object of
/// CloudEvents attributes (of any JSON type), or any bytes at all.
pub fn decode_structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok(raw) = structured_message(&mut u) {
        check(&raw);
    }
}

fn check(raw: &AmqpMessage<Body<Value>>) {
    let decoded = codec::decode(raw);
    // Decoded or not, what reaches the runtime is a valid envelope.
    if let Err(e) = decoded.message.validate() {
        panic!("the decoder produced an invalid message ({e}): {raw:?}");
    }
    if decoded.error.is_none() && !refused_for_publishing(&decoded.message) {
        let again = codec::decode(&codec::as_received(&codec::encode(&decoded.message)));
        assert!(
            again.error.is_none(),
            "a decoded message does not decode after encoding: {:?}",
            again.error
        );
        assert_eq!(again.message, decoded.message, "encode → decode changed it");
    }
    let _ = codec::dead_letter_metadata(raw);
    if let Ok(copy) = codec::resend_copy(raw) {
        let _ = codec::encoded_size(&copy);
        let _ = codec::decode(&codec::as_received(&copy));
    }
}

fn binary_message(u: &mut Unstructured<'_>) -> Result<AmqpMessage<Body<Value>>> {
    let mut props = OrderedMap::new();
    // Usually a plausible event, so that the decoder gets past its first checks.
    if u.ratio(3, 4)? {
        for (name, value) in [
            ("id", "e-1"),
            ("source", "/fuzz"),
            ("specversion", "1.0"),
            ("type", "fuzz.event"),
        ] {
            if u.ratio(9, 10)? {
                props.insert(
                    format!("{}{name}", codec::CE_PREFIX),
                    SimpleValue::String(value.to_owned()),
                );
            }
        }
    }
    for _ in 0..u.int_in_range(0..=12)? {
        let name = property_name(u)?;
        let value = simple_value(u)?;
        props.insert(name, value);
    }
    let content_type = if u.arbitrary()? {
        Some(
            u.choose(&[
                "text/plain",
                "application/json",
                "application/octet-stream",
                "",
            ])?
            .to_string(),
        )
    } else if u.arbitrary()? {
        Some(u.arbitrary::<String>()?)
    } else {
        None
    };
    let body = body(u)?;
    message(u, props, content_type, body)
}

fn structured_message(u: &mut Unstructured<'_>) -> Result<AmqpMessage<Body<Value>>> {
    let json = if u.ratio(4, 5)? {
        serde_json::to_vec(&json_object(u, 0)?).unwrap_or_default()
    } else {
        u.arbitrary::<Vec<u8>>()?
    };
    let content_type = u
        .choose(&[
            "application/cloudevents+json",
            "application/cloudevents+json; charset=utf-8",
            "APPLICATION/CLOUDEVENTS+JSON",
        ])?
        .to_string();
    let mut props = OrderedMap::new();
    for _ in 0..u.int_in_range(0..=3)? {
        props.insert(property_name(u)?, simple_value(u)?);
    }
    message(
        u,
        props,
        Some(content_type),
        Body::Data(Batch::new(vec![Data(Binary::from(json))])),
    )
}

fn message(
    u: &mut Unstructured<'_>,
    props: OrderedMap<String, SimpleValue>,
    content_type: Option<String>,
    body: Body<Value>,
) -> Result<AmqpMessage<Body<Value>>> {
    let message_id = match u.int_in_range(0..=4)? {
        0 => None,
        1 => Some(MessageId::String(u.arbitrary()?)),
        2 => Some(MessageId::Ulong(u.arbitrary()?)),
        3 => Some(MessageId::Binary(Binary::from(u.arbitrary::<Vec<u8>>()?))),
        _ => Some(MessageId::Uuid(fe2o3_amqp_types::primitives::Uuid::from(
            u.arbitrary::<[u8; 16]>()?,
        ))),
    };
    let properties = Properties {
        message_id,
        content_type: content_type.map(Into::into),
        ..Properties::default()
    };
    // The client's own type for received messages: start from an empty one and fill it.
    let raw = ServiceBusMessage::new(Vec::<u8>::new())
        .raw_amqp_message()
        .clone();
    Ok(AmqpMessage {
        header: raw.header,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(properties),
        application_properties: if u.ratio(1, 10)? {
            None
        } else {
            Some(ApplicationProperties(props))
        },
        body,
        footer: None,
    })
}

fn property_name(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=5)? {
        0 | 1 => format!("{}{}", codec::CE_PREFIX, u.choose(MEMBERS)?),
        2 => format!("{}{}", codec::CE_PREFIX_COLON, u.choose(MEMBERS)?),
        3 => format!("{}{}", codec::CE_PREFIX, u.arbitrary::<String>()?),
        // busway's own properties, named by busway-core and the codec, so that the fuzzer
        // follows a renamed one.
        4 => match u.int_in_range(0..=1)? {
            0 => u.choose(&wire::BUSWAY_HEADERS)?,
            _ => u.choose(&[codec::TARGET_GROUP, codec::DEAD_LETTER_REASON])?,
        }
        .to_string(),
        _ => u.arbitrary::<String>()?,
    })
}

fn simple_value(u: &mut Unstructured<'_>) -> Result<SimpleValue> {
    Ok(match u.int_in_range(0..=13)? {
        0..=4 => SimpleValue::String(u.arbitrary()?),
        5 => SimpleValue::Symbol(u.arbitrary::<String>()?.into()),
        6 => SimpleValue::Bool(u.arbitrary()?),
        7 => SimpleValue::Long(u.arbitrary()?),
        8 => SimpleValue::Ulong(u.arbitrary()?),
        9 => SimpleValue::Int(u.arbitrary()?),
        10 => SimpleValue::Timestamp(Timestamp::from_milliseconds(u.arbitrary()?)),
        11 => SimpleValue::Double(u.arbitrary::<f64>()?.into()),
        12 => SimpleValue::Binary(Binary::from(u.arbitrary::<Vec<u8>>()?)),
        _ => SimpleValue::Uuid(fe2o3_amqp_types::primitives::Uuid::from(
            u.arbitrary::<[u8; 16]>()?,
        )),
    })
}

fn body(u: &mut Unstructured<'_>) -> Result<Body<Value>> {
    Ok(match u.int_in_range(0..=6)? {
        0..=2 => Body::Data(Batch::new(vec![Data(Binary::from(
            u.arbitrary::<Vec<u8>>()?,
        ))])),
        3 => {
            let sections: Vec<Vec<u8>> = u.arbitrary()?;
            Body::Data(Batch::new(
                sections
                    .into_iter()
                    .map(|s| Data(Binary::from(s)))
                    .collect::<Vec<_>>(),
            ))
        }
        4 => Body::Value(AmqpValue(match u.int_in_range(0..=3)? {
            0 => Value::Binary(Binary::from(u.arbitrary::<Vec<u8>>()?)),
            1 => Value::String(u.arbitrary()?),
            2 => Value::Long(u.arbitrary()?),
            _ => Value::Null,
        })),
        5 => Body::Empty,
        _ => Body::Sequence(Batch::new(vec![])),
    })
}

#[cfg(test)]
mod tests {
    /// A short deterministic run, so that the entry points stay exercised by `cargo test
    /// --features fuzzing` (the long runs belong to the fuzz targets).
    #[test]
    fn random_inputs_keep_the_invariants() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let len = (next() % 600) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            super::decode_binary(&data);
            super::decode_structured(&data);
        }
        super::decode_binary(&[]);
        super::decode_structured(&[]);
    }
}
