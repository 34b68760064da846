//! The `<entity>/$management` node: request/response operations of Service Bus.

use std::collections::BTreeMap;

use fe2o3_amqp_types::{
    messaging::{Body, Message, message::__private::Deserializable},
    primitives::{Array, Binary, OrderedMap, Timestamp, Uuid, Value},
};
use serde_amqp::{described::Described, descriptor::Descriptor};

use crate::{
    amqp::{
        self, Reply, StatusNames, app_property, as_i64, as_str, body_map, error_reply, get, items,
        lock_tokens, opt_str, sequence_numbers,
    },
    config::{CorrelationFilter, RuleConfig, RuleFilter},
    entity::{Broker, Disposition, OpError, Source, Target, entity_key, message::AmqpMessage},
};

/// The entity a management node belongs to, resolved once when the link attaches.
#[derive(Debug, Clone)]
pub(crate) struct ManagementNode {
    pub path: String,
    pub target: Option<Target>,
    pub source: Option<Source>,
}

impl ManagementNode {
    pub fn resolve(broker: &Broker, path: &str) -> Option<Self> {
        let node = Self {
            path: path.to_string(),
            target: broker.send_target(path),
            source: broker.receive_source(path),
        };
        (node.target.is_some() || node.source.is_some()).then_some(node)
    }

    fn source(&self) -> Result<&Source, OpError> {
        self.source
            .as_ref()
            .ok_or_else(|| OpError::bad_request(format!("'{}' cannot be received from", self.path)))
    }

    fn target(&self) -> Result<&Target, OpError> {
        self.target
            .as_ref()
            .ok_or_else(|| OpError::bad_request(format!("'{}' cannot be sent to", self.path)))
    }
}

/// Handles one request and builds its reply.
pub(crate) fn handle(broker: &Broker, node: &ManagementNode, request: &AmqpMessage) -> Reply {
    let id = request
        .properties
        .as_ref()
        .and_then(|p| p.message_id.clone());
    let operation = app_property(request, "operation").unwrap_or_default();
    let empty = OrderedMap::new();
    let body = body_map(request).unwrap_or(&empty);
    tracing::debug!(entity = %node.path, %operation, "management request");
    match dispatch(broker, node, &operation, body) {
        Ok((status, value)) => amqp::reply(
            StatusNames::Management,
            id,
            status,
            status_text(status),
            None,
            value,
        ),
        Err(error) => {
            tracing::debug!(entity = %node.path, %operation, status = error.status, "management request failed");
            error_reply(StatusNames::Management, id, &error)
        }
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        204 => "No Content",
        _ => "OK",
    }
}

fn empty() -> Value {
    Value::Map(OrderedMap::new())
}

fn dispatch(
    broker: &Broker,
    node: &ManagementNode,
    operation: &str,
    body: &OrderedMap<Value, Value>,
) -> Result<(u16, Value), OpError> {
    match operation {
        "com.microsoft:renew-lock" => {
            let expirations = broker.renew_locks(&lock_tokens(body)?)?;
            Ok((
                200,
                amqp::map([(
                    "expirations",
                    Value::Array(Array(
                        expirations
                            .into_iter()
                            .map(|ms| Value::Timestamp(Timestamp::from_milliseconds(ms)))
                            .collect(),
                    )),
                )]),
            ))
        }
        "com.microsoft:peek-message" => {
            let from = get(body, "from-sequence-number")
                .and_then(as_i64)
                .unwrap_or(1);
            let count = get(body, "message-count")
                .and_then(as_i64)
                .unwrap_or(1)
                .max(0);
            let session = opt_str(body, "session-id");
            let messages = broker.peek(
                node.source()?,
                from,
                usize::try_from(count).unwrap_or(0),
                session.as_deref(),
            );
            let status = if messages.is_empty() { 204 } else { 200 };
            let list = messages
                .into_iter()
                .map(|bytes| amqp::map([("message", Value::Binary(Binary::from(bytes)))]))
                .collect();
            Ok((status, amqp::map([("messages", Value::List(list))])))
        }
        "com.microsoft:receive-by-sequence-number" => {
            let seqs = sequence_numbers(body)?;
            // receiver-settle-mode: 0 = receive-and-delete (first), 1 = peek-lock (second).
            let mode = get(body, "receiver-settle-mode")
                .and_then(as_i64)
                .unwrap_or(1);
            let session = opt_str(body, "session-id");
            let messages =
                broker.receive_deferred(node.source()?, &seqs, mode == 0, session.as_deref())?;
            let list = messages
                .into_iter()
                .map(|(token, bytes)| {
                    amqp::map([
                        ("lock-token", Value::Uuid(Uuid::from(token))),
                        ("message", Value::Binary(Binary::from(bytes))),
                    ])
                })
                .collect();
            Ok((200, amqp::map([("messages", Value::List(list))])))
        }
        "com.microsoft:update-disposition" => {
            let status = opt_str(body, "disposition-status").unwrap_or_default();
            let properties = properties_to_modify(body);
            let disposition = match status.to_ascii_lowercase().as_str() {
                "completed" => Disposition::Complete,
                "abandoned" => Disposition::Abandon(properties),
                "defered" | "deferred" => Disposition::Defer(properties),
                "suspended" => Disposition::DeadLetter {
                    reason: opt_str(body, "deadletter-reason"),
                    description: opt_str(body, "deadletter-description"),
                    properties,
                },
                other => {
                    return Err(OpError::bad_request(format!(
                        "unknown disposition-status '{other}'"
                    )));
                }
            };
            for token in lock_tokens(body)? {
                broker.settle(&token, None, disposition.clone())?;
            }
            Ok((200, empty()))
        }
        "com.microsoft:schedule-message" => {
            let entries = get(body, "messages")
                .and_then(items)
                .ok_or_else(|| OpError::bad_request("messages is required"))?;
            let mut messages = Vec::with_capacity(entries.len());
            for entry in entries {
                let bytes = match entry {
                    Value::Map(m) => match get(m, "message") {
                        Some(Value::Binary(b)) => b.to_vec(),
                        _ => return Err(OpError::bad_request("message must be binary")),
                    },
                    _ => return Err(OpError::bad_request("messages must be maps")),
                };
                messages.push(decode_message(&bytes)?);
            }
            let seqs = broker.schedule(node.target()?, messages)?;
            Ok((
                200,
                amqp::map([(
                    "sequence-numbers",
                    Value::Array(Array(seqs.into_iter().map(Value::Long).collect())),
                )]),
            ))
        }
        "com.microsoft:cancel-scheduled-message" => {
            broker.cancel_scheduled(node.target()?, &sequence_numbers(body)?)?;
            Ok((200, empty()))
        }
        "com.microsoft:renew-session-lock" => {
            let id = session_id(body)?;
            let until = broker.renew_session(node.source()?, &id)?;
            Ok((
                200,
                amqp::map([(
                    "expiration",
                    Value::Timestamp(Timestamp::from_milliseconds(until)),
                )]),
            ))
        }
        "com.microsoft:get-session-state" => {
            let id = session_id(body)?;
            let state = broker
                .session_state(node.source()?, &id)?
                .unwrap_or_default();
            Ok((
                200,
                amqp::map([("session-state", Value::Binary(Binary::from(state)))]),
            ))
        }
        "com.microsoft:set-session-state" => {
            let id = session_id(body)?;
            let state = match get(body, "session-state") {
                Some(Value::Binary(b)) => Some(b.to_vec()),
                _ => None,
            };
            broker.set_session_state(node.source()?, &id, state)?;
            Ok((200, empty()))
        }
        "com.microsoft:add-rule" => {
            let source = subscription(broker, node)?;
            let name = opt_str(body, "rule-name")
                .ok_or_else(|| OpError::bad_request("rule-name is required"))?;
            let description = match get(body, "rule-description") {
                Some(Value::Map(m)) => m,
                _ => return Err(OpError::bad_request("rule-description is required")),
            };
            let filter = parse_rule_filter(description)?;
            broker.add_rule(source, RuleConfig { name, filter })?;
            Ok((200, empty()))
        }
        "com.microsoft:remove-rule" => {
            let source = subscription(broker, node)?;
            let name = opt_str(body, "rule-name")
                .ok_or_else(|| OpError::bad_request("rule-name is required"))?;
            broker.remove_rule(source, &name)?;
            Ok((200, empty()))
        }
        "com.microsoft:enumerate-rules" => {
            let source = subscription(broker, node)?;
            let skip = get(body, "skip").and_then(as_i64).unwrap_or(0).max(0);
            let top = get(body, "top")
                .and_then(as_i64)
                .unwrap_or(i64::from(i32::MAX))
                .max(0);
            let rules = broker
                .rules(source)?
                .into_iter()
                .skip(usize::try_from(skip).unwrap_or(0))
                .take(usize::try_from(top).unwrap_or(usize::MAX))
                .map(|(name, filter, created)| {
                    amqp::map([("rule-description", encode_rule(&name, &filter, created))])
                })
                .collect::<Vec<_>>();
            let status = if rules.is_empty() { 204 } else { 200 };
            Ok((status, amqp::map([("rules", Value::List(rules))])))
        }
        other => Err(OpError::not_allowed(format!(
            "The management operation '{other}' is not supported by the emulator."
        ))),
    }
}

fn session_id(body: &OrderedMap<Value, Value>) -> Result<String, OpError> {
    opt_str(body, "session-id").ok_or_else(|| OpError::bad_request("session-id is required"))
}

fn subscription<'a>(broker: &Broker, node: &'a ManagementNode) -> Result<&'a Source, OpError> {
    let source = node.source()?;
    if broker.is_subscription(source) {
        Ok(source)
    } else {
        Err(OpError::bad_request("rules exist only on subscriptions"))
    }
}

fn properties_to_modify(body: &OrderedMap<Value, Value>) -> Vec<(String, Value)> {
    match get(body, "properties-to-modify") {
        Some(Value::Map(m)) => m
            .iter()
            .filter_map(|(k, v)| as_str(k).map(|k| (k.to_string(), v.clone())))
            .collect(),
        _ => Vec::new(),
    }
}

/// Decodes a serialized message (as sent in `schedule-message`).
pub(crate) fn decode_message(bytes: &[u8]) -> Result<AmqpMessage, OpError> {
    serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(bytes)
        .map(|d| d.0)
        .map_err(|e| OpError::bad_request(format!("invalid message encoding: {e}")))
}

fn parse_rule_filter(description: &OrderedMap<Value, Value>) -> Result<RuleFilter, OpError> {
    if let Some(Value::Map(sql)) = get(description, "sql-filter") {
        let expression = opt_str(sql, "expression")
            .ok_or_else(|| OpError::bad_request("sql-filter needs an expression"))?;
        if let Some(Value::Map(action)) = get(description, "sql-rule-action")
            && opt_str(action, "expression").is_some_and(|e| !e.trim().is_empty())
        {
            return Err(OpError::bad_request(
                "SQL rule actions are not supported by the emulator",
            ));
        }
        return Ok(RuleFilter::Sql(expression));
    }
    if let Some(Value::Map(c)) = get(description, "correlation-filter") {
        let mut properties = BTreeMap::new();
        if let Some(Value::Map(props)) = get(c, "properties") {
            for (k, v) in props.iter() {
                if let Some(k) = as_str(k) {
                    properties.insert(k.to_string(), to_json(v));
                }
            }
        }
        return Ok(RuleFilter::Correlation(CorrelationFilter {
            correlation_id: opt_str(c, "correlation-id"),
            message_id: opt_str(c, "message-id"),
            to: opt_str(c, "to"),
            reply_to: opt_str(c, "reply-to"),
            label: opt_str(c, "label"),
            session_id: opt_str(c, "session-id"),
            reply_to_session_id: opt_str(c, "reply-to-session-id"),
            content_type: opt_str(c, "content-type"),
            properties,
        }));
    }
    Err(OpError::bad_request(
        "rule-description needs a sql-filter or correlation-filter",
    ))
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Symbol(s) => serde_json::Value::String(s.0.clone()),
        Value::Double(d) => serde_json::json!(d.into_inner()),
        Value::Float(f) => serde_json::json!(f.into_inner()),
        other => match as_i64(other) {
            Some(n) => serde_json::json!(n),
            None => serde_json::Value::String(format!("{other:?}")),
        },
    }
}

fn from_json(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Long(i),
            None => Value::Double(n.as_f64().unwrap_or_default().into()),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    }
}

fn described(code: u64, fields: Vec<Value>) -> Value {
    Value::Described(Box::new(Described {
        descriptor: Descriptor::Code(code),
        value: Value::List(fields),
    }))
}

fn opt(value: &Option<String>) -> Value {
    value.clone().map_or(Value::Null, Value::String)
}

/// Encodes a rule the way `enumerate-rules` returns it (`com.microsoft:rule-description:list`).
fn encode_rule(name: &str, filter: &RuleFilter, created_ms: i64) -> Value {
    let filter = match filter {
        RuleFilter::Sql(e) if e.trim() == "1=1" => described(0x0000_0013_7000_0007, vec![]),
        RuleFilter::Sql(e) if e.trim() == "1=0" => described(0x0000_0013_7000_0008, vec![]),
        RuleFilter::Sql(e) => described(
            0x0000_0013_7000_0006,
            vec![Value::String(e.clone()), Value::Null],
        ),
        RuleFilter::Correlation(c) => {
            let mut props = OrderedMap::new();
            for (k, v) in &c.properties {
                props.insert(Value::String(k.clone()), from_json(v));
            }
            described(
                0x0000_0013_7000_0009,
                vec![
                    opt(&c.correlation_id),
                    opt(&c.message_id),
                    opt(&c.to),
                    opt(&c.reply_to),
                    opt(&c.label),
                    opt(&c.session_id),
                    opt(&c.reply_to_session_id),
                    opt(&c.content_type),
                    Value::Map(props),
                ],
            )
        }
    };
    let action = described(0x0000_0137_0000_0005, vec![]);
    described(
        0x0000_0137_0000_0004,
        vec![
            filter,
            action,
            Value::String(name.to_string()),
            Value::Timestamp(Timestamp::from_milliseconds(created_ms)),
        ],
    )
}

/// Entity key of a management node address (`<entity>/$management`).
pub(crate) fn node_path(address: &str) -> Option<String> {
    let path = crate::entity::address_path(address);
    let lower = entity_key(path);
    lower
        .ends_with("/$management")
        .then(|| path[..path.len() - "/$management".len()].to_string())
}
