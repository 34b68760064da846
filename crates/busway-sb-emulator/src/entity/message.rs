//! A message as the broker stores it, and how it is presented to receivers.
//!
//! The client's AMQP message is kept as sent (bare message plus the annotations it set); broker
//! metadata lives beside it and is written into the annotations only when the message leaves, so
//! every delivery carries fresh values (delivery count, lock, state).

use fe2o3_amqp_types::{
    messaging::{
        ApplicationProperties, Body, DeliveryAnnotations, Header, Message, MessageAnnotations,
        MessageId, annotations::OwnedKey, message::__private::Serializable,
    },
    primitives::{SimpleValue, Symbol, Timestamp, Uuid, Value},
};

/// `x-opt-lock-token` delivery annotation (uuid).
pub(crate) const LOCK_TOKEN: &str = "x-opt-lock-token";
const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
const LOCKED_UNTIL: &str = "x-opt-locked-until";
const MESSAGE_STATE: &str = "x-opt-message-state";
const ENQUEUE_SEQUENCE_NUMBER: &str = "x-opt-enqueue-sequence-number";
const DEAD_LETTER_SOURCE: &str = "x-opt-deadletter-source";
/// `x-opt-scheduled-enqueue-time` message annotation set by senders.
pub(crate) const SCHEDULED_ENQUEUE_TIME: &str = "x-opt-scheduled-enqueue-time";
/// Application property carrying the dead-letter reason.
pub(crate) const DEAD_LETTER_REASON: &str = "DeadLetterReason";
/// Application property carrying the dead-letter description.
pub(crate) const DEAD_LETTER_DESCRIPTION: &str = "DeadLetterErrorDescription";

/// The client's message type on the wire.
pub(crate) type AmqpMessage = Message<Body<Value>>;

/// Visible state of a stored message (`x-opt-message-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageState {
    Active = 0,
    Deferred = 1,
    Scheduled = 2,
}

/// Who holds a message lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockOwner {
    /// Received on this receive link (settled by disposition on the same link, or by management).
    Link(u64),
    /// Received through `receive-by-sequence-number` (settled by `update-disposition`).
    Management,
}

/// A peek-lock lock on a message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lock {
    pub token: [u8; 16],
    /// Expiry in ms since the epoch; `i64::MAX` for session messages, whose lock is the session's.
    pub until_ms: i64,
    pub owner: LockOwner,
    /// Whether the message has actually been handed to the client. A lock taken while probing a
    /// link for credit is not a delivery and is undone without counting one.
    pub delivered: bool,
}

/// A message in a queue, subscription or dead-letter queue.
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub seq: i64,
    pub enqueue_seq: i64,
    pub message: AmqpMessage,
    pub enqueued_ms: i64,
    pub state: MessageState,
    pub scheduled_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    /// Number of completed delivery attempts (`header.delivery_count`; the client shows +1).
    pub delivery_count: u32,
    pub lock: Option<Lock>,
    pub session_id: Option<String>,
    pub size: usize,
    pub dead_letter_source: Option<String>,
}

impl StoredMessage {
    /// Whether a receiver may take this message now.
    pub fn is_available(&self, now_ms: i64) -> bool {
        self.state == MessageState::Active
            && self.lock.is_none()
            && self.expires_ms.is_none_or(|e| e > now_ms)
    }

    /// The message as a receiver sees it: header and broker annotations filled in, plus the lock
    /// token as a delivery annotation when there is one. `show_expiry` adds `x-opt-locked-until`
    /// (peek-lock only; receive-and-delete deliveries carry a token but no lock).
    pub fn to_wire(&self, lock: Option<&Lock>, show_expiry: bool) -> AmqpMessage {
        let mut message = self.message.clone();
        let header = message.header.get_or_insert_with(Header::default);
        header.delivery_count = self.delivery_count;
        let annotations = message
            .message_annotations
            .get_or_insert_with(MessageAnnotations::default);
        put(annotations, SEQUENCE_NUMBER, Value::Long(self.seq));
        put(
            annotations,
            ENQUEUE_SEQUENCE_NUMBER,
            Value::Long(self.enqueue_seq),
        );
        put(
            annotations,
            ENQUEUED_TIME,
            Value::Timestamp(Timestamp::from_milliseconds(self.enqueued_ms)),
        );
        put(annotations, MESSAGE_STATE, Value::Int(self.state as i32));
        if let Some(source) = &self.dead_letter_source {
            put(
                annotations,
                DEAD_LETTER_SOURCE,
                Value::String(source.clone()),
            );
        }
        annotations.swap_remove(&OwnedKey::Symbol(Symbol::from(LOCKED_UNTIL)));
        if let Some(lock) = lock {
            if show_expiry {
                let until = if lock.until_ms == i64::MAX {
                    // Session messages: report a far-future expiry the client can represent.
                    253_402_300_799_000
                } else {
                    lock.until_ms
                };
                put(
                    annotations,
                    LOCKED_UNTIL,
                    Value::Timestamp(Timestamp::from_milliseconds(until)),
                );
            }
            let delivery = message
                .delivery_annotations
                .get_or_insert_with(DeliveryAnnotations::default);
            delivery.insert(
                OwnedKey::Symbol(Symbol::from(LOCK_TOKEN)),
                Value::Uuid(Uuid::from(lock.token)),
            );
        }
        message
    }

    /// Merges `properties-to-modify` into the application properties, as Service Bus does on
    /// abandon, defer and dead-letter. Values that are not AMQP simple values are ignored.
    pub fn modify_properties<'a>(
        &mut self,
        properties: impl IntoIterator<Item = (&'a str, Value)>,
    ) {
        for (key, value) in properties {
            if let Ok(simple) = SimpleValue::try_from(value) {
                self.message
                    .application_properties
                    .get_or_insert_with(ApplicationProperties::default)
                    .insert(key.to_string(), simple);
            }
        }
    }
}

fn put(annotations: &mut MessageAnnotations, key: &str, value: Value) {
    annotations.insert(OwnedKey::Symbol(Symbol::from(key)), value);
}

/// Reads a message annotation by name.
pub(crate) fn annotation<'a>(message: &'a AmqpMessage, key: &str) -> Option<&'a Value> {
    message
        .message_annotations
        .as_ref()?
        .iter()
        .find_map(|(k, v)| match k {
            OwnedKey::Symbol(s) if s.0 == key => Some(v),
            _ => None,
        })
}

/// Serialises a message the way `peek-message` and `receive-by-sequence-number` return it, with
/// every header field present as Service Bus writes it (see `wire::explicit_header`).
pub(crate) fn encode(message: AmqpMessage) -> Vec<u8> {
    let bytes = serde_amqp::to_vec(&Serializable(message)).unwrap_or_default();
    crate::wire::explicit_header(&bytes).unwrap_or(bytes)
}

/// The string form Service Bus uses for a MessageId (duplicate detection, filters).
pub(crate) fn message_id_string(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => b.iter().map(|byte| format!("{byte:02x}")).collect(),
    }
}
