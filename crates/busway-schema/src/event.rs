//! Typed events: a Rust type that knows its CloudEvents `type`, its version and its codec, and
//! how the version travels with each message.
//!
//! # How the version travels
//!
//! Every event published by an [`EventPublisher`](crate::publish::EventPublisher) carries its
//! schema's subject and version in the CloudEvents `dataschema` attribute, as a URI whose path
//! ends in `/subjects/<subject>/versions/<version>` (the registry's resource for that schema):
//!
//! ```text
//! busway:/subjects/shop.order.placed/versions/2
//! https://registry.example:8081/subjects/shop.order.placed/versions/2
//! ```
//!
//! The first form is the default; the second is written when the publisher is given the
//! registry's address, so that the attribute can be resolved with any HTTP client. The subject is
//! percent-encoded as one path segment (a `/` in a subject becomes `%2F`). The version is the
//! subject's version in the registry, which the publisher checks is the event's
//! [`EventType::VERSION`]. [`DataSchema::parse`] reads both forms back and refuses anything else
//! with an error saying what is wrong.

use std::fmt;
use std::str::FromStr;

use crate::codec::Codec;
use crate::error::SchemaError;

/// A Rust type as one version of an event type: its CloudEvents `type`, the version of its
/// schema, the registry subject the schema lives under, and the codec that turns it into message
/// data.
///
/// Each version of an event that a program still handles is its own Rust type with the same
/// `TYPE` and its own `VERSION`. Handlers take one of them as
/// [`Event<E>`](crate::dispatch::Event) (the extractor, named for what a handler receives; this
/// trait is named for what it describes); an [`EventRouter`](crate::dispatch::EventRouter) routes
/// on `TYPE` and upcasts older versions into the one a handler takes.
///
/// ```
/// use busway_schema::codec::JsonSchemaCodec;
/// use busway_schema::event::{DataSchema, EventType};
/// use busway_schema::SchemaError;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced { order: u64, cents: i64 }
///
/// impl EventType for OrderPlaced {
///     const TYPE: &'static str = "shop.order.placed";
///     const VERSION: u32 = 2;
///     type Codec = JsonSchemaCodec<Self>;
///     fn codec() -> Result<Self::Codec, SchemaError> {
///         JsonSchemaCodec::new(r#"{"type":"object","required":["order","cents"]}"#)
///     }
/// }
///
/// assert_eq!(OrderPlaced::SUBJECT, "shop.order.placed");
/// assert_eq!(DataSchema::of::<OrderPlaced>().to_string(), "busway:/subjects/shop.order.placed/versions/2");
/// ```
pub trait EventType: Sized + Send + 'static {
    /// The CloudEvents `type`, shared by every version of the event (e.g. `shop.order.placed`).
    const TYPE: &'static str;

    /// The version of the event's schema, from 1: its version under [`SUBJECT`](Self::SUBJECT)
    /// in the registry.
    const VERSION: u32;

    /// The registry subject holding the event's schemas; the type by default.
    const SUBJECT: &'static str = Self::TYPE;

    /// The codec writing and reading the event.
    type Codec: Codec<Self>;

    /// Creates the codec, compiling its schema. Called once per publisher and per router, not per
    /// message.
    fn codec() -> Result<Self::Codec, SchemaError>;
}

/// What a message's `dataschema` names: a subject and a version of it.
///
/// ```
/// use busway_schema::event::DataSchema;
///
/// let ds = DataSchema::new("orders/placed", 3);
/// assert_eq!(ds.to_string(), "busway:/subjects/orders%2Fplaced/versions/3");
/// assert_eq!(ds.to_string().parse::<DataSchema>()?, ds);
/// assert_eq!(
///     DataSchema::parse("https://registry:8081/subjects/orders%2Fplaced/versions/3")?,
///     ds
/// );
/// assert!(DataSchema::parse("busway:/subjects/orders/versions/latest").is_err());
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DataSchema {
    /// The registry subject.
    pub subject: String,
    /// The version within the subject, from 1.
    pub version: u32,
}

/// The prefix of the default `dataschema` form.
pub const DEFAULT_BASE: &str = "busway:";

impl DataSchema {
    /// A subject and version.
    pub fn new(subject: impl Into<String>, version: u32) -> Self {
        Self {
            subject: subject.into(),
            version,
        }
    }

    /// The subject and version of event `E`.
    pub fn of<E: EventType>() -> Self {
        Self::new(E::SUBJECT, E::VERSION)
    }

    /// The URI under `base`: `<base>/subjects/<subject>/versions/<version>`, e.g. with the
    /// registry's address as base. A trailing `/` of `base` is dropped.
    pub fn to_uri_with_base(&self, base: &str) -> String {
        format!(
            "{}/subjects/{}/versions/{}",
            base.trim_end_matches('/'),
            percent_encode(&self.subject),
            self.version
        )
    }

    /// Parses a `dataschema` URI whose path ends in `/subjects/<subject>/versions/<version>`.
    ///
    /// Refused, with [`SchemaError::Decode`] saying why: no scheme, a query or fragment, another
    /// path shape, an empty subject, a bad percent-escape, a version that is not a positive
    /// decimal number.
    pub fn parse(uri: &str) -> Result<Self, SchemaError> {
        let fail = |why: &str| {
            SchemaError::Decode(format!(
                "malformed dataschema {uri:?}: {why} (expected a URI ending in /subjects/<subject>/versions/<version>)"
            ))
        };
        let scheme_end = uri.find(':').ok_or_else(|| fail("no URI scheme"))?;
        let scheme = &uri[..scheme_end];
        let valid_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return Err(fail("invalid URI scheme"));
        }
        if uri.contains(['?', '#']) {
            return Err(fail("a query or fragment is not allowed"));
        }
        if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("whitespace is not allowed"));
        }
        let at = uri
            .rfind("/subjects/")
            .ok_or_else(|| fail("no /subjects/ segment"))?;
        let tail = &uri[at + "/subjects/".len()..];
        let mut parts = tail.split('/');
        let (Some(subject), Some("versions"), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail(
                "the path does not end in /subjects/<subject>/versions/<version>",
            ));
        };
        let subject = percent_decode(subject).map_err(|why| fail(&why))?;
        if subject.is_empty() {
            return Err(fail("the subject is empty"));
        }
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("the version is not a decimal number"));
        }
        let version: u32 = version
            .parse()
            .map_err(|_| fail("the version is out of range"))?;
        if version == 0 {
            return Err(fail("versions start at 1"));
        }
        Ok(Self { subject, version })
    }
}

impl fmt::Display for DataSchema {
    /// The default form, `busway:/subjects/<subject>/versions/<version>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri_with_base(DEFAULT_BASE))
    }
}

impl FromStr for DataSchema {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, SchemaError> {
        Self::parse(s)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes percent-escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape at byte {i} of the subject"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the subject is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_awkward_subjects() {
        for subject in [
            "a",
            "shop.order.placed",
            "a/b c%d?é#",
            "orders-value",
            "~x_y",
        ] {
            let ds = DataSchema::new(subject, 42);
            let uri = ds.to_string();
            assert!(uri.starts_with("busway:/subjects/"), "{uri}");
            assert_eq!(DataSchema::parse(&uri).unwrap(), ds, "{uri}");
            let http = ds.to_uri_with_base("http://registry:8081/");
            assert!(http.starts_with("http://registry:8081/subjects/"), "{http}");
            assert_eq!(DataSchema::parse(&http).unwrap(), ds, "{http}");
        }
    }

    #[test]
    fn malformed_uris_are_refused_with_the_reason() {
        let cases = [
            ("", "no URI scheme"),
            ("/subjects/a/versions/1", "no URI scheme"),
            ("1x:/subjects/a/versions/1", "invalid URI scheme"),
            ("busway:/subjects/a/versions/1?x=1", "query"),
            ("busway:/subjects/a/versions/1#f", "query or fragment"),
            ("busway:/subjects/a b/versions/1", "whitespace"),
            ("busway:/schemas/a/versions/1", "no /subjects/"),
            ("busway:/subjects/a/versions", "does not end"),
            ("busway:/subjects/a/versions/1/extra", "does not end"),
            ("busway:/subjects/a/b/versions/1", "does not end"),
            ("busway:/subjects//versions/1", "empty"),
            ("busway:/subjects/a%2/versions/1", "percent-escape"),
            ("busway:/subjects/a%zz/versions/1", "percent-escape"),
            ("busway:/subjects/%ff/versions/1", "UTF-8"),
            ("busway:/subjects/a/versions/latest", "decimal"),
            ("busway:/subjects/a/versions/+1", "decimal"),
            ("busway:/subjects/a/versions/", "decimal"),
            ("busway:/subjects/a/versions/0", "start at 1"),
            ("busway:/subjects/a/versions/99999999999", "out of range"),
        ];
        for (uri, why) in cases {
            let err = DataSchema::parse(uri).unwrap_err();
            assert!(
                matches!(&err, SchemaError::Decode(m) if m.contains(why) && m.contains("malformed dataschema")),
                "{uri:?}: {err}"
            );
        }
    }

    #[test]
    fn multibyte_input_never_panics() {
        for uri in [
            "é:",
            "busway:/subjects/é%",
            "busway:/subjects/%é/versions/1",
            "ü",
        ] {
            assert!(DataSchema::parse(uri).is_err(), "{uri}");
        }
    }
}
