//! Small helpers for the AMQP values exchanged with `$cbs` and `$management` nodes.

use fe2o3_amqp_types::{
    messaging::{AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties},
    primitives::{OrderedMap, SimpleValue, Value},
};

use crate::entity::{OpError, message::AmqpMessage};

/// A reply sent on a `$cbs` / `$management` reply link.
pub(crate) type Reply = Message<AmqpValue<Value>>;

/// The request body as a map, when it is an `amqp-value` map.
pub(crate) fn body_map(message: &AmqpMessage) -> Option<&OrderedMap<Value, Value>> {
    match &message.body {
        Body::Value(AmqpValue(Value::Map(map))) => Some(map),
        _ => None,
    }
}

/// Looks up a string key in a map keyed by strings or symbols.
pub(crate) fn get<'a>(map: &'a OrderedMap<Value, Value>, key: &str) -> Option<&'a Value> {
    map.iter().find_map(|(k, v)| match k {
        Value::String(s) if s == key => Some(v),
        Value::Symbol(s) if s.0 == key => Some(v),
        _ => None,
    })
}

/// An application property as a string.
pub(crate) fn app_property(message: &AmqpMessage, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// A string value (string or symbol).
pub(crate) fn as_str(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Symbol(s) => Some(&s.0),
        _ => None,
    }
}

/// An integer of any AMQP width.
pub(crate) fn as_i64(value: &Value) -> Option<i64> {
    Some(match value {
        Value::Long(v) => *v,
        Value::Int(v) => i64::from(*v),
        Value::Short(v) => i64::from(*v),
        Value::Byte(v) => i64::from(*v),
        Value::Ulong(v) => i64::try_from(*v).ok()?,
        Value::Uint(v) => i64::from(*v),
        Value::Ushort(v) => i64::from(*v),
        Value::Ubyte(v) => i64::from(*v),
        _ => return None,
    })
}

/// The items of an AMQP array or list.
pub(crate) fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(a) => Some(&a.0),
        Value::List(l) => Some(l),
        _ => None,
    }
}

/// Lock tokens of a request (`lock-tokens`, an array of uuids).
pub(crate) fn lock_tokens(map: &OrderedMap<Value, Value>) -> Result<Vec<[u8; 16]>, OpError> {
    get(map, "lock-tokens")
        .and_then(items)
        .ok_or_else(|| OpError::bad_request("lock-tokens is required"))?
        .iter()
        .map(|v| match v {
            Value::Uuid(u) => Ok(*u.as_inner()),
            _ => Err(OpError::bad_request("lock-tokens must be uuids")),
        })
        .collect()
}

/// Sequence numbers of a request (`sequence-numbers`, an array of longs).
pub(crate) fn sequence_numbers(map: &OrderedMap<Value, Value>) -> Result<Vec<i64>, OpError> {
    get(map, "sequence-numbers")
        .and_then(items)
        .ok_or_else(|| OpError::bad_request("sequence-numbers is required"))?
        .iter()
        .map(|v| as_i64(v).ok_or_else(|| OpError::bad_request("sequence numbers must be longs")))
        .collect()
}

/// An optional string field.
pub(crate) fn opt_str(map: &OrderedMap<Value, Value>, key: &str) -> Option<String> {
    get(map, key).and_then(as_str).map(str::to_string)
}

/// Builds a string-keyed map value.
pub(crate) fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut out = OrderedMap::new();
    for (k, v) in entries {
        out.insert(Value::String(k.to_string()), v);
    }
    Value::Map(out)
}

/// Names of the status application properties of a reply. The two nodes differ on the wire:
/// the `$cbs` node follows the AMQP CBS draft (`status-code`, `status-description`), which the
/// official SDKs read there; `$management` uses Service Bus's own camel-case names
/// (`statusCode`, `statusDescription`, `errorCondition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusNames {
    Cbs,
    Management,
}

impl StatusNames {
    fn code(self) -> &'static str {
        match self {
            Self::Cbs => "status-code",
            Self::Management => "statusCode",
        }
    }
    fn description(self) -> &'static str {
        match self {
            Self::Cbs => "status-description",
            Self::Management => "statusDescription",
        }
    }
    fn condition(self) -> &'static str {
        match self {
            Self::Cbs => "error-condition",
            Self::Management => "errorCondition",
        }
    }
}

/// A reply with a status code, correlated to the request.
pub(crate) fn reply(
    names: StatusNames,
    request_id: Option<MessageId>,
    status: u16,
    description: &str,
    error_condition: Option<&str>,
    body: Value,
) -> Reply {
    let mut props = ApplicationProperties::builder()
        .insert(names.code(), SimpleValue::Int(i32::from(status)))
        .insert(
            names.description(),
            SimpleValue::String(description.to_string()),
        )
        .build();
    if let Some(condition) = error_condition {
        props.insert(
            names.condition().to_string(),
            SimpleValue::Symbol(condition.into()),
        );
    }
    Message::builder()
        .properties(Properties {
            correlation_id: request_id,
            ..Properties::default()
        })
        .application_properties(props)
        .value(body)
        .build()
}

/// A reply for a failed operation.
pub(crate) fn error_reply(
    names: StatusNames,
    request_id: Option<MessageId>,
    error: &OpError,
) -> Reply {
    reply(
        names,
        request_id,
        error.status,
        &error.description,
        Some(error.condition),
        // An empty map decodes as every response body type the client expects, so the client
        // reaches its status-code check instead of failing to decode.
        Value::Map(OrderedMap::new()),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use fe2o3_amqp_types::{
        messaging::message::__private::Serializable,
        primitives::{Array, Timestamp},
    };

    use super::*;

    #[test]
    fn timestamp_array_reply_encodes() {
        let body = map([(
            "expirations",
            Value::Array(Array(vec![Value::Timestamp(Timestamp::from_milliseconds(
                5,
            ))])),
        )]);
        let message = reply(StatusNames::Management, None, 200, "OK", None, body);
        let bytes = serde_amqp::to_vec(&Serializable(message));
        assert!(bytes.is_ok(), "{bytes:?}");
    }
}
