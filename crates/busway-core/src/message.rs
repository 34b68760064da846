//! The message envelope: a CloudEvents 1.0 event with its data as bytes.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

/// The only CloudEvents specification version busway produces and accepts.
pub const SPEC_VERSION: &str = "1.0";

/// The content type set by the JSON helpers.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Extension attribute carrying the partition (ordering) key.
pub const PARTITION_KEY: &str = "partitionkey";
/// Extension attribute correlating all messages of one conversation.
pub const CORRELATION_ID: &str = "correlationid";
/// Extension attribute naming the message that caused this one.
pub const CAUSATION_ID: &str = "causationid";
/// W3C trace context extension.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state extension.
pub const TRACESTATE: &str = "tracestate";

/// The `source` of the stand-in for a broker message that is not a CloudEvent
/// ([`Message::undecodable`]): the same on every broker.
pub const UNDECODABLE_SOURCE: &str = "urn:busway:undecodable";
/// The `type` of that stand-in.
pub const UNDECODABLE_TYPE: &str = "busway.undecodable";
/// Context attribute names that extensions may not use.
const RESERVED: &[&str] = &[
    "id",
    "source",
    "type",
    "specversion",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
];

/// A CloudEvents 1.0 event: context attributes, extension attributes and opaque data.
///
/// Everything set here reaches consumers unchanged on every broker. Build one with
/// [`Message::builder`]:
///
/// ```
/// use busway_core::Message;
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct OrderPlaced { order: u64 }
///
/// let msg = Message::builder("/shop/orders", "shop.order.placed.v1")
///     .partition_key("customer-7")
///     .json(&OrderPlaced { order: 42 })?
///     .build()?;
/// assert_eq!(msg.datacontenttype(), Some("application/json"));
/// assert_eq!(msg.decode_json::<OrderPlaced>()?, OrderPlaced { order: 42 });
/// # Ok::<(), busway_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    id: String,
    source: String,
    ty: String,
    specversion: String,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    subject: Option<String>,
    time: Option<DateTime<Utc>>,
    extensions: BTreeMap<String, String>,
    data: Bytes,
}

impl Message {
    /// Starts a message with its required `source` and `type`; the id defaults to a new UUIDv7
    /// and `time` to now.
    pub fn builder(source: impl Into<String>, ty: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            message: Message {
                id: uuid::Uuid::now_v7().to_string(),
                source: source.into(),
                ty: ty.into(),
                specversion: SPEC_VERSION.to_owned(),
                datacontenttype: None,
                dataschema: None,
                subject: None,
                time: Some(Utc::now()),
                extensions: BTreeMap::new(),
                data: Bytes::new(),
            },
            error: None,
        }
    }

    /// Starts a message with no defaults at all, for adapters rebuilding one from the wire (no id
    /// is generated and no clock is read: both would be overwritten).
    pub fn from_wire(
        id: impl Into<String>,
        source: impl Into<String>,
        ty: impl Into<String>,
    ) -> MessageBuilder {
        MessageBuilder {
            message: Message::bare(id.into(), source.into(), ty.into(), Bytes::new()),
            error: None,
        }
    }

    /// A message with the required attributes and data only.
    fn bare(id: String, source: String, ty: String, data: Bytes) -> Message {
        Message {
            id,
            source,
            ty,
            specversion: SPEC_VERSION.to_owned(),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            time: None,
            extensions: BTreeMap::new(),
            data,
        }
    }

    /// The stand-in for a broker message that could not be decoded into a CloudEvent, so that
    /// it can travel through busway (to the dead-letter queue, into a listing) without ever
    /// reaching a handler: `raw` as its data, [`UNDECODABLE_SOURCE`] and [`UNDECODABLE_TYPE`],
    /// and as id the broker's own message id when there is a non-empty one (a new UUIDv7
    /// otherwise). Infallible, and always [valid](Message::validate).
    ///
    /// ```
    /// use busway_core::message::{Message, UNDECODABLE_TYPE};
    ///
    /// let m = Message::undecodable(bytes::Bytes::from_static(b"\xff"), Some("broker-42"));
    /// assert_eq!((m.id(), m.ty()), ("broker-42", UNDECODABLE_TYPE));
    /// assert!(m.validate().is_ok());
    /// ```
    pub fn undecodable(raw: Bytes, broker_id: Option<&str>) -> Message {
        let id = broker_id
            .filter(|id| !id.is_empty())
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        Message::bare(
            id,
            UNDECODABLE_SOURCE.to_owned(),
            UNDECODABLE_TYPE.to_owned(),
            raw,
        )
    }

    /// Unique id of the event within its source.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// URI-reference identifying the context in which the event happened.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// The event type, e.g. `shop.order.placed.v1`.
    pub fn ty(&self) -> &str {
        &self.ty
    }
    /// Always `1.0`.
    pub fn specversion(&self) -> &str {
        &self.specversion
    }
    /// Media type of `data`.
    pub fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }
    /// URI of the schema `data` adheres to.
    pub fn dataschema(&self) -> Option<&str> {
        self.dataschema.as_deref()
    }
    /// The subject of the event in the context of its source.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }
    /// When the occurrence happened.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }
    /// `time` in the RFC 3339 form used on the wire.
    pub fn time_rfc3339(&self) -> Option<String> {
        self.time.map(format_time)
    }
    /// One extension attribute.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions.get(name).map(String::as_str)
    }
    /// All extension attributes, sorted by name.
    pub fn extensions(&self) -> &BTreeMap<String, String> {
        &self.extensions
    }
    /// The event payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
    /// The ordering key (`partitionkey` extension).
    pub fn partition_key(&self) -> Option<&str> {
        self.extension(PARTITION_KEY)
    }
    /// The correlation id (`correlationid` extension).
    pub fn correlation_id(&self) -> Option<&str> {
        self.extension(CORRELATION_ID)
    }
    /// The id of the message that caused this one (`causationid` extension).
    pub fn causation_id(&self) -> Option<&str> {
        self.extension(CAUSATION_ID)
    }

    /// Decodes JSON `data` into `T`.
    pub fn decode_json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.data).map_err(|e| {
            Error::serialization(
                format!("data of message {} is not the expected JSON", self.id),
                e,
            )
        })
    }

    /// Approximate encoded size: data plus every attribute name and value.
    ///
    /// Adapters add their own framing on top; this is what size limits are checked against first.
    pub fn encoded_len(&self) -> usize {
        let opt = |v: &Option<String>| v.as_ref().map_or(0, |s| s.len() + 16);
        self.data.len()
            + self.id.len()
            + self.source.len()
            + self.ty.len()
            + self.specversion.len()
            + opt(&self.datacontenttype)
            + opt(&self.dataschema)
            + opt(&self.subject)
            + self.time.map_or(0, |_| 40)
            + self
                .extensions
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
            + 64
    }

    /// A builder pre-filled with this message, to derive a modified copy.
    pub fn to_builder(&self) -> MessageBuilder {
        MessageBuilder {
            message: self.clone(),
            error: None,
        }
    }

    /// Checks the CloudEvents rules: required attributes present, `specversion` 1.0, extension
    /// names lowercase alphanumeric and not reserved.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty() {
            return Err(Error::InvalidMessage("`id` must not be empty".into()));
        }
        if self.source.is_empty() {
            return Err(Error::InvalidMessage("`source` must not be empty".into()));
        }
        if self.ty.is_empty() {
            return Err(Error::InvalidMessage("`type` must not be empty".into()));
        }
        if self.specversion != SPEC_VERSION {
            return Err(Error::InvalidMessage(format!(
                "`specversion` is {:?}, only {SPEC_VERSION} is supported",
                self.specversion
            )));
        }
        for (attr, value) in [
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
            ("subject", &self.subject),
        ] {
            if value.as_deref() == Some("") {
                return Err(Error::InvalidMessage(format!(
                    "`{attr}` must not be empty when present"
                )));
            }
        }
        for name in self.extensions.keys() {
            validate_extension_name(name)?;
        }
        Ok(())
    }
}

fn validate_extension_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(Error::InvalidMessage(format!(
            "extension name {name:?} must consist of lowercase letters and digits"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(Error::InvalidMessage(format!(
            "extension name {name:?} is a reserved CloudEvents attribute"
        )));
    }
    Ok(())
}

/// Formats a timestamp the way busway writes `time` on every wire: RFC 3339, UTC, `Z`, with as
/// many fractional digits as needed (so a value round-trips exactly).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 `time` attribute.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::serialization(format!("`time` {s:?} is not RFC 3339"), e))
}

/// Builds a [`Message`]; [`MessageBuilder::build`] validates it.
#[derive(Debug)]
#[must_use]
pub struct MessageBuilder {
    message: Message,
    error: Option<Error>,
}

impl MessageBuilder {
    /// Sets the id (defaults to a new UUIDv7).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.message.id = id.into();
        self
    }
    /// Sets `specversion`; only `1.0` passes validation.
    pub fn specversion(mut self, v: impl Into<String>) -> Self {
        self.message.specversion = v.into();
        self
    }
    /// Sets `datacontenttype`.
    pub fn datacontenttype(mut self, v: impl Into<String>) -> Self {
        self.message.datacontenttype = Some(v.into());
        self
    }
    /// Sets `dataschema`.
    pub fn dataschema(mut self, v: impl Into<String>) -> Self {
        self.message.dataschema = Some(v.into());
        self
    }
    /// Sets `subject`.
    pub fn subject(mut self, v: impl Into<String>) -> Self {
        self.message.subject = Some(v.into());
        self
    }
    /// Sets `time` (defaults to now for new messages).
    pub fn time(mut self, t: DateTime<Utc>) -> Self {
        self.message.time = Some(t);
        self
    }
    /// Removes `time`.
    pub fn no_time(mut self) -> Self {
        self.message.time = None;
        self
    }
    /// Sets an extension attribute; the name is checked by [`build`](Self::build).
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.message.extensions.insert(name.into(), value.into());
        self
    }
    /// Sets the ordering key (`partitionkey`).
    pub fn partition_key(self, key: impl Into<String>) -> Self {
        self.extension(PARTITION_KEY, key)
    }
    /// Sets the correlation id.
    pub fn correlation_id(self, id: impl Into<String>) -> Self {
        self.extension(CORRELATION_ID, id)
    }
    /// Marks this message as caused by `cause`: `causationid` is its id, and the correlation id
    /// is carried over (or started from the cause's id).
    pub fn caused_by(self, cause: &Message) -> Self {
        let correlation = cause.correlation_id().unwrap_or(cause.id()).to_owned();
        self.extension(CAUSATION_ID, cause.id().to_owned())
            .correlation_id(correlation)
    }
    /// Sets raw data.
    pub fn data(mut self, data: impl Into<Bytes>) -> Self {
        self.message.data = data.into();
        self
    }
    /// Serializes `value` as JSON data and sets `datacontenttype: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self> {
        let data = serde_json::to_vec(value)
            .map_err(|e| Error::serialization("value cannot be serialized as JSON", e))?;
        self.message.data = Bytes::from(data);
        self.message.datacontenttype = Some(JSON_CONTENT_TYPE.to_owned());
        Ok(self)
    }
    /// Records an error to be returned by `build`, for adapters decoding attributes.
    pub(crate) fn fail(mut self, error: Error) -> Self {
        self.error.get_or_insert(error);
        self
    }
    /// Validates and returns the message.
    pub fn build(self) -> Result<Message> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.message.validate()?;
        Ok(self.message)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_uuid_v7_and_now() {
        let m = Message::builder("/s", "t").build().unwrap();
        let id = uuid::Uuid::parse_str(m.id()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert!(m.time().is_some());
        assert_eq!(m.specversion(), "1.0");
    }

    #[test]
    fn validation_names_the_problem() {
        let err = Message::builder("", "t").build().unwrap_err();
        assert!(err.to_string().contains("`source`"), "{err}");
        let err = Message::builder("/s", "t")
            .extension("Bad-Name", "x")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("Bad-Name"), "{err}");
        let err = Message::builder("/s", "t")
            .extension("subject", "x")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
        let err = Message::builder("/s", "t")
            .specversion("0.3")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("0.3"), "{err}");
    }

    #[test]
    fn json_helpers_round_trip() {
        let m = Message::builder("/s", "t")
            .json(&serde_json::json!({"a": 1}))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(m.datacontenttype(), Some(JSON_CONTENT_TYPE));
        let v: serde_json::Value = m.decode_json().unwrap();
        assert_eq!(v["a"], 1);
        let err = m.decode_json::<Vec<u8>>().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Serialization);
    }

    #[test]
    fn causation_carries_correlation() {
        let first = Message::builder("/s", "a").build().unwrap();
        let second = Message::builder("/s", "b")
            .caused_by(&first)
            .build()
            .unwrap();
        let third = Message::builder("/s", "c")
            .caused_by(&second)
            .build()
            .unwrap();
        assert_eq!(second.causation_id(), Some(first.id()));
        assert_eq!(third.correlation_id(), Some(first.id()));
        assert_eq!(third.causation_id(), Some(second.id()));
    }

    #[test]
    fn time_round_trips_with_nanoseconds() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time(&format_time(t)).unwrap(), t);
        assert_eq!(format_time(t), "2026-01-02T03:04:05.123456789Z");
    }
}
