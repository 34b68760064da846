//! Messages as Kafka records: the CloudEvents Kafka protocol binding in binary mode, plus the
//! few `busway-*` headers that carry redelivery state.
//!
//! Binary mode: every attribute is a `ce_<name>` header, `datacontenttype` is the `content-type`
//! header, the data is the record value untouched, and the `partitionkey` extension is also the
//! record key (so Kafka partitions by it). Structured mode (`content-type:
//! application/cloudevents+json`) is read too.
//!
//! A record with a key and no `partitionkey` attribute (as the official CloudEvents SDKs write
//! it: they move `partitionkey` to the key) is read with the key as its `partitionkey`, so the
//! key survives a redelivery or dead letter and the message keeps its partition.

use busway_core::message::format_time;
use busway_core::redelivery::{HEADER_ATTEMPT, HEADER_DUE, HEADER_FIRST_FAILURE};
use busway_core::{Message, wire};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rdkafka::Message as _;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Header, Headers, OwnedHeaders};

/// Prefix of CloudEvents attribute headers (Kafka protocol binding).
pub(crate) const CE_PREFIX: &str = "ce_";
/// The binding's content-type header.
pub(crate) const CONTENT_TYPE: &str = "content-type";
/// The `partitionkey` attribute's header.
const PARTITION_KEY_HEADER: &str = "ce_partitionkey";

/// Record framing counted on top of key, value and headers (record batch share, varints).
const RECORD_OVERHEAD: usize = 72;

/// A record to produce. Headers are kept in librdkafka's own list, filled once.
#[derive(Clone, Debug)]
pub(crate) struct OutRecord {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Bytes,
    pub(crate) headers: OwnedHeaders,
    /// Bytes of header names and values, for the size check.
    header_bytes: usize,
}

impl OutRecord {
    fn new(key: Option<Vec<u8>>, value: Bytes, capacity: usize) -> Self {
        Self {
            key,
            value,
            headers: OwnedHeaders::new_with_capacity(capacity),
            header_bytes: 0,
        }
    }

    /// Binary-mode encoding of `message`.
    pub(crate) fn from_message(message: &Message) -> Self {
        let attributes = wire::binary_attributes(message);
        let mut record = Self::new(
            message.partition_key().map(|k| k.as_bytes().to_vec()),
            message.data().clone(),
            attributes.len() + 1,
        );
        // One buffer for every `ce_<name>`: publishing is hot, allocations add up.
        let mut name = String::with_capacity(32);
        for (k, v) in &attributes {
            name.clear();
            name.push_str(CE_PREFIX);
            name.push_str(k);
            record.add_header(&name, Some(v.as_bytes()));
        }
        if let Some(ct) = message.datacontenttype() {
            record.add_header(CONTENT_TYPE, Some(ct.as_bytes()));
        }
        record
    }

    /// The record as a consumer would read it back.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn as_consumed(&self, topic: &str, partition: i32, offset: i64) -> InRecord {
        InRecord {
            topic: topic.to_owned(),
            partition,
            offset,
            key: self.key.clone(),
            value: self.value.clone(),
            headers: self
                .headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect(),
            timestamp: None,
        }
    }

    /// Size on the wire, as checked against `max_message_bytes`.
    pub(crate) fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.len()
            + self.header_bytes
            + RECORD_OVERHEAD
    }

    /// Appends a header.
    pub(crate) fn add_header(&mut self, name: &str, value: Option<&[u8]>) {
        self.header_bytes += name.len() + value.map_or(0, <[u8]>::len) + 2;
        let headers = std::mem::replace(&mut self.headers, OwnedHeaders::new_with_capacity(0));
        self.headers = headers.insert(Header { key: name, value });
    }
}

/// A record header: name and value (`None`: a null value).
pub(crate) type RecordHeader = (String, Option<Vec<u8>>);

/// A consumed record, detached from librdkafka's buffers.
#[derive(Clone, Debug)]
pub(crate) struct InRecord {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Bytes,
    /// Headers in record order.
    pub(crate) headers: Vec<RecordHeader>,
    pub(crate) timestamp: Option<i64>,
}

impl InRecord {
    pub(crate) fn from_borrowed(m: &BorrowedMessage<'_>) -> Self {
        let headers = m.headers().map(read_headers).unwrap_or_default();
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
            headers,
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// Bytes of key and value, what dominates the memory a record holds.
    pub(crate) fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.len()
    }

    fn header_list(&self) -> impl Iterator<Item = Header<'_, &[u8]>> {
        self.headers.iter().map(|(key, value)| Header {
            key: key.as_str(),
            value: value.as_deref(),
        })
    }

    /// A header's value as text, if present and UTF-8 (the last one wins).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.header_list()
            .filter(|h| h.key == name)
            .last()
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Decodes the CloudEvent, binary or structured mode; the error says why it cannot be.
    pub(crate) fn decode(&self) -> Result<Message, String> {
        let content_type = self.header(CONTENT_TYPE);
        if wire::is_structured(content_type) {
            let message = wire::from_structured(&self.value).map_err(|e| e.to_string())?;
            return match self.key_as_partition_key() {
                Some(key) if message.partition_key().is_none() => message
                    .to_builder()
                    .partition_key(key)
                    .build()
                    .map_err(|e| e.to_string()),
                _ => Ok(message),
            };
        }
        let mut attrs = Vec::new();
        if !self.header_list().any(|h| h.key == PARTITION_KEY_HEADER)
            && let Some(key) = self.key_as_partition_key()
        {
            attrs.push((PARTITION_KEY_HEADER, key.to_owned()));
        }
        for h in self.header_list() {
            if !h.key.starts_with(CE_PREFIX) {
                continue;
            }
            let text = match h.value {
                None => String::new(),
                Some(v) => std::str::from_utf8(v)
                    .map_err(|_| format!("header {} is not UTF-8", h.key))?
                    .to_owned(),
            };
            attrs.push((h.key, text));
        }
        wire::from_binary(
            attrs,
            &[CE_PREFIX],
            content_type.map(str::to_owned),
            self.value.clone(),
        )
        .map_err(|e| e.to_string())
    }

    /// The record key as a `partitionkey`: text, not empty.
    fn key_as_partition_key(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| !k.is_empty())
    }

    /// The id of the stand-in for a record that is not a CloudEvent ([`Message::undecodable`]):
    /// where the record is, since a record has no message id of its own.
    pub(crate) fn placeholder_id(&self) -> String {
        format!("kafka:{}/{}@{}", self.topic, self.partition, self.offset)
    }

    /// The stand-in for a record that is not a CloudEvent, for listings; the DLQ receives the
    /// original record, not this.
    pub(crate) fn placeholder(&self) -> Message {
        Message::undecodable(self.value.clone(), Some(&self.placeholder_id()))
    }

    /// The delivery this record is: 1 unless a retry record says otherwise.
    pub(crate) fn attempt(&self) -> u32 {
        self.header(HEADER_ATTEMPT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
            .max(1)
    }

    pub(crate) fn first_failure(&self) -> Option<DateTime<Utc>> {
        self.header(HEADER_FIRST_FAILURE)
            .and_then(|v| busway_core::message::parse_time(v).ok())
    }

    /// When a retry or scheduled record is due (ms since epoch); `None` for plain records.
    /// busway writes milliseconds; an RFC 3339 time (the form other brokers' copies use) is
    /// read too.
    pub(crate) fn due_millis(&self) -> Option<i64> {
        let v = self.header(HEADER_DUE)?;
        v.parse().ok().or_else(|| {
            busway_core::message::parse_time(v)
                .ok()
                .map(|t| t.timestamp_millis())
        })
    }

    /// Whether this scheduled record was published, and fell due, before `joined` (ms since the
    /// epoch): a group that joined then never had it coming. Unknown times count as after.
    pub(crate) fn is_before_group(&self, joined: i64) -> bool {
        self.due_millis().is_some_and(|due| due < joined)
            && self.timestamp.is_some_and(|published| published < joined)
    }

    /// The record as it was published: key, value and headers, minus busway's redelivery and
    /// dead-letter headers.
    pub(crate) fn original(&self) -> OutRecord {
        let mut out = OutRecord::new(self.key.clone(), self.value.clone(), self.headers.len());
        for h in self.header_list().filter(|h| !is_busway_header(h.key)) {
            out.add_header(h.key, h.value);
        }
        out
    }
}

/// The headers of a consumed record.
///
/// A producer may send any bytes as a header name, and rdkafka 0.39 unwraps their UTF-8 check
/// (`Headers::try_get` panics on a name that is not UTF-8). Such a header is left out (it could
/// not be produced again through rdkafka either) rather than letting a peer's record take the
/// consumer down; the rest of the record is read as usual.
fn read_headers(headers: &BorrowedHeaders) -> Vec<RecordHeader> {
    let mut out = Vec::with_capacity(headers.count());
    let mut unreadable = 0usize;
    for i in 0..headers.count() {
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            headers
                .try_get(i)
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
        }));
        match read {
            Ok(Some(header)) => out.push(header),
            Ok(None) => {}
            Err(_) => unreadable += 1,
        }
    }
    if unreadable > 0 {
        tracing::warn!(
            unreadable,
            "a record carries header names that are not UTF-8; they are left out"
        );
    }
    out
}

/// Headers busway adds on its way (retry state, dead-letter metadata).
fn is_busway_header(name: &str) -> bool {
    name.starts_with("busway-")
}

/// Headers of a redelivery: the attempt it will be, first failure and due time (on a record from
/// [`InRecord::original`], which has none of them yet).
pub(crate) fn redelivery_headers(
    record: &mut OutRecord,
    attempt: u32,
    first_failure: DateTime<Utc>,
    due: DateTime<Utc>,
) {
    record.add_header(HEADER_ATTEMPT, Some(attempt.to_string().as_bytes()));
    record.add_header(
        HEADER_FIRST_FAILURE,
        Some(format_time(first_failure).as_bytes()),
    );
    add_due_header(record, due);
}

/// The due time of a retry or scheduled record, in milliseconds since the Unix epoch.
pub(crate) fn add_due_header(record: &mut OutRecord, due: DateTime<Utc>) {
    record.add_header(
        HEADER_DUE,
        Some(due.timestamp_millis().to_string().as_bytes()),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn as_in(out: &OutRecord) -> InRecord {
        out.as_consumed("t", 0, 7)
    }

    fn has(rec: &InRecord, name: &str, value: &str) -> bool {
        rec.header(name) == Some(value)
    }

    #[test]
    fn binary_mode_round_trip_with_key_and_content_type() {
        let m = Message::builder("/s", "t.v1")
            .partition_key("k-1")
            .subject("sub")
            .json(&serde_json::json!({"a": 1}))
            .unwrap()
            .build()
            .unwrap();
        let out = OutRecord::from_message(&m);
        assert_eq!(out.key.as_deref(), Some(&b"k-1"[..]));
        let rec = as_in(&out);
        assert!(has(&rec, "content-type", "application/json"));
        assert!(has(&rec, "ce_id", m.id()));
        assert!(has(&rec, "ce_partitionkey", "k-1"));
        assert!(out.size() > m.data().len());
        assert_eq!(rec.decode().unwrap(), m);
    }

    #[test]
    fn busway_headers_are_read_and_stripped_from_the_original() {
        let m = Message::builder("/s", "t").build().unwrap();
        let mut out = OutRecord::from_message(&m);
        let now = Utc::now();
        redelivery_headers(&mut out, 3, now, now);
        let rec = as_in(&out);
        assert_eq!(rec.attempt(), 3);
        assert_eq!(rec.due_millis(), Some(now.timestamp_millis()));
        assert!(rec.first_failure().is_some());
        let original = as_in(&rec.original());
        assert!(
            original
                .header_list()
                .all(|h| !h.key.starts_with("busway-"))
        );
        assert_eq!(original.decode().unwrap(), m);
    }

    /// The official CloudEvents SDKs move `partitionkey` to the record key and write no
    /// `ce_partitionkey` header: the key is the partition key.
    #[test]
    fn a_key_without_partitionkey_header_is_the_partition_key() {
        let mut foreign =
            OutRecord::new(Some(b"customer-42".to_vec()), Bytes::from_static(b"{}"), 5);
        for (k, v) in [
            ("ce_specversion", "1.0"),
            ("ce_id", "sdk-1"),
            ("ce_source", "urn:sdk"),
            ("ce_type", "t"),
        ] {
            foreign.add_header(k, Some(v.as_bytes()));
        }
        let m = as_in(&foreign).decode().unwrap();
        assert_eq!(m.partition_key(), Some("customer-42"));
        // Re-published by busway (a redelivery, a dead letter), it keeps key and partition key.
        let again = as_in(&OutRecord::from_message(&m));
        assert_eq!(again.key.as_deref(), Some(&b"customer-42"[..]));
        assert_eq!(again.decode().unwrap(), m);

        let mut structured = OutRecord::new(
            Some(b"customer-43".to_vec()),
            Bytes::from_static(br#"{"specversion":"1.0","id":"2","source":"s","type":"t"}"#),
            1,
        );
        structured.add_header("content-type", Some(b"application/cloudevents+json"));
        assert_eq!(
            as_in(&structured).decode().unwrap().partition_key(),
            Some("customer-43")
        );

        // A header wins over the key; a key that is not text is no partition key.
        let mut both = foreign.clone();
        both.add_header("ce_partitionkey", Some(b"from-header"));
        assert_eq!(
            as_in(&both).decode().unwrap().partition_key(),
            Some("from-header")
        );
        let binary_key = InRecord {
            key: Some(vec![0xff, 0x00]),
            ..as_in(&foreign)
        };
        assert_eq!(binary_key.decode().unwrap().partition_key(), None);
    }

    #[test]
    fn busway_messages_round_trip_unchanged_with_or_without_a_key() {
        let keyless = Message::builder("/s", "t").build().unwrap();
        let rec = as_in(&OutRecord::from_message(&keyless));
        assert_eq!(rec.key, None);
        assert_eq!(rec.decode().unwrap(), keyless);
        let keyed = Message::builder("/s", "t")
            .partition_key("k")
            .build()
            .unwrap();
        assert_eq!(
            as_in(&OutRecord::from_message(&keyed)).decode().unwrap(),
            keyed
        );
    }

    #[test]
    fn due_times_are_read_in_milliseconds_or_rfc3339() {
        let mut out = OutRecord::new(None, Bytes::new(), 1);
        out.add_header(HEADER_DUE, Some(b"2026-01-01T00:00:01Z"));
        assert_eq!(as_in(&out).due_millis(), Some(1_767_225_601_000));
        let mut out = OutRecord::new(None, Bytes::new(), 1);
        add_due_header(
            &mut out,
            DateTime::from_timestamp_millis(1_767_225_601_000).unwrap(),
        );
        assert_eq!(as_in(&out).due_millis(), Some(1_767_225_601_000));
    }

    #[test]
    fn garbage_is_undecodable_but_gets_a_placeholder() {
        let mut bad = OutRecord::new(None, Bytes::from_static(b"\xff\x00"), 1);
        bad.add_header("ce_id", Some(&[0xff]));
        let rec = InRecord {
            partition: 1,
            offset: 2,
            ..as_in(&bad)
        };
        assert!(rec.decode().is_err());
        assert_eq!(rec.placeholder().data().as_ref(), b"\xff\x00");
        let mut structured = OutRecord::new(
            None,
            Bytes::from_static(br#"{"specversion":"1.0","id":"1","source":"s","type":"t"}"#),
            1,
        );
        structured.add_header("content-type", Some(b"application/cloudevents+json"));
        assert_eq!(as_in(&structured).decode().unwrap().id(), "1");
    }
}
