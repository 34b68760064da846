//! Codecs: how a typed event becomes the bytes of a message's `data`, and back.
//!
//! A [`Codec<T>`] encodes and decodes one Rust type. Four are provided:
//!
//! | codec | `datacontenttype` | schema | validation |
//! |---|---|---|---|
//! | [`JsonCodec`] | `application/json` | none | none (serde only) |
//! | [`JsonSchemaCodec`] | `application/json` | JSON Schema | at encode and at decode |
//! | [`AvroCodec`] | `application/avro` | Avro | at encode; decode resolves the writer's schema into the reader's |
//! | [`ProtobufCodec`] | `application/protobuf` | `.proto` | by the wire format (prost) |
//!
//! Content types: busway writes `application/avro` for a single Avro binary datum (no object
//! container header, no embedded schema: the schema is named by `dataschema`), and
//! `application/protobuf` for a serialized Protocol Buffers message. On reading, media types are
//! compared without parameters and case-insensitively, and the common aliases `avro/binary` and
//! `application/x-protobuf` are accepted too.
//!
//! Codecs compile their schema once, when they are created; [`CompiledSchema`] is that compiled
//! form, also used for the writer's schema of a message written with another version.

mod avro;
mod cache;
mod json;
mod json_schema;
mod protobuf;

use std::fmt;

use serde_json::Value;

pub use avro::AvroCodec;
pub use cache::SchemaCache;
pub use json::JsonCodec;
pub use json_schema::JsonSchemaCodec;
pub use protobuf::ProtobufCodec;

use crate::error::SchemaError;
use crate::schema::{Schema, SchemaFormat};

/// How an encoded event is framed in a message's `data`; publisher and router must agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireFormat {
    /// The encoded event as is; the schema is named by `dataschema` only (the default).
    #[default]
    Plain,
    /// The Confluent Schema Registry framing ([`registry::wire`](crate::registry::wire)): magic
    /// byte 0, the 4-byte schema id, for Protobuf the message indexes, then the encoded event.
    /// For interoperating with Confluent serializers (Kafka Connect, ksqlDB, clients in other
    /// languages). Needs a registry; the router checks that the id in the data is the schema the
    /// `dataschema` names.
    Confluent,
}

/// Media type of JSON data ([`JsonCodec`], [`JsonSchemaCodec`]).
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Media type of a single Avro binary datum ([`AvroCodec`]).
pub const AVRO_CONTENT_TYPE: &str = "application/avro";
/// Media type of a serialized Protocol Buffers message ([`ProtobufCodec`]).
pub const PROTOBUF_CONTENT_TYPE: &str = "application/protobuf";

/// Encodes values of `T` into message data and decodes them back.
///
/// `decode` receives the schema the data was written with when it differs from the codec's own
/// (an event published by a producer on another version); a codec that has no schema, or whose
/// format needs none to read other versions (Protobuf), ignores it.
///
/// ```
/// use busway_schema::codec::{Codec, JsonSchemaCodec};
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct OrderPlaced { order: u64 }
///
/// let codec = JsonSchemaCodec::<OrderPlaced>::new(
///     r#"{"type":"object","properties":{"order":{"type":"integer","minimum":1}},"required":["order"]}"#,
/// )?;
/// let data = codec.encode(&OrderPlaced { order: 7 })?;
/// assert_eq!(codec.decode(&data, None)?, OrderPlaced { order: 7 });
/// // An event that breaks the schema is refused, naming the violation:
/// let err = codec.encode(&OrderPlaced { order: 0 }).unwrap_err();
/// assert!(err.to_string().contains("/order"), "{err}");
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
pub trait Codec<T>: Send + Sync + 'static {
    /// The `datacontenttype` of the data this codec writes.
    fn content_type(&self) -> &str;

    /// Whether data of `content_type` can be read by this codec. Compares media types without
    /// parameters, case-insensitively.
    fn accepts(&self, content_type: &str) -> bool {
        same_media_type(content_type, self.content_type())
    }

    /// The codec's own schema, compiled; `None` for a codec without a schema.
    fn schema(&self) -> Option<&CompiledSchema>;

    /// Validates and encodes `value`. A value that breaks the schema is refused with
    /// [`SchemaError::Validation`] naming the violation.
    fn encode(&self, value: &T) -> Result<Vec<u8>, SchemaError>;

    /// Decodes `data`, written with `writer` (the codec's own schema when `None`).
    ///
    /// Bytes that do not parse fail with [`SchemaError::Decode`]; data that parses but breaks
    /// its schema fails with [`SchemaError::Validation`].
    fn decode(&self, data: &[u8], writer: Option<&CompiledSchema>) -> Result<T, SchemaError>;
}

/// Whether two media types are the same, ignoring parameters (`; charset=...`), case, and the
/// aliases busway accepts (`avro/binary`, `application/x-protobuf`).
pub fn same_media_type(a: &str, b: &str) -> bool {
    canonical_media_type(a) == canonical_media_type(b)
}

fn canonical_media_type(ct: &str) -> String {
    let essence = ct.split(';').next().unwrap_or_default().trim();
    let lower = essence.to_ascii_lowercase();
    match lower.as_str() {
        "avro/binary" | "application/x-avro" => AVRO_CONTENT_TYPE.to_owned(),
        "application/x-protobuf" | "application/vnd.google.protobuf" => {
            PROTOBUF_CONTENT_TYPE.to_owned()
        }
        _ => lower,
    }
}

/// A schema parsed and compiled once, ready to validate, encode and decode.
///
/// For Protobuf, a `.proto` file may define several messages; the compiled schema is bound to
/// one of them (the first one the file defines unless one is named).
///
/// ```
/// use busway_schema::{codec::CompiledSchema, Schema, SchemaFormat};
///
/// let compiled = CompiledSchema::compile(&Schema::avro(r#"{"type":"record","name":"A","fields":[]}"#))?;
/// assert_eq!(compiled.format(), SchemaFormat::Avro);
/// let err = CompiledSchema::compile(&Schema::avro("{not avro")).unwrap_err();
/// assert!(matches!(err, busway_schema::SchemaError::InvalidSchema { .. }));
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
pub struct CompiledSchema {
    schema: Schema,
    inner: Inner,
}

enum Inner {
    Avro(avro::Compiled),
    Json(jsonschema::Validator),
    Protobuf(prost_reflect::MessageDescriptor),
}

impl fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CompiledSchema");
        d.field("format", &self.schema.format());
        if let Inner::Protobuf(desc) = &self.inner {
            d.field("message", &desc.full_name());
        }
        d.finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Parses and compiles `schema`. An invalid definition fails with
    /// [`SchemaError::InvalidSchema`].
    pub fn compile(schema: &Schema) -> Result<Self, SchemaError> {
        Self::compile_message(schema, None)
    }

    /// Like [`compile`](Self::compile); for Protobuf, binds the schema to the message with this
    /// full name (`package.Message`), or to the first message the file defines when `None`.
    pub fn compile_message(schema: &Schema, message: Option<&str>) -> Result<Self, SchemaError> {
        let inner = match schema.format() {
            SchemaFormat::Avro => Inner::Avro(avro::compile(schema.definition())?),
            SchemaFormat::Json => Inner::Json(json_schema::compile(schema.definition())?),
            SchemaFormat::Protobuf => {
                Inner::Protobuf(protobuf::compile(schema.definition(), message)?)
            }
        };
        Ok(Self {
            schema: schema.clone(),
            inner,
        })
    }

    /// Compiles another schema the way this one was compiled: for Protobuf, bound to the message
    /// of the same full name when the other file defines it.
    pub fn compile_like(&self, other: &Schema) -> Result<Self, SchemaError> {
        match &self.inner {
            Inner::Protobuf(desc) => Self::compile_message(other, Some(desc.full_name()))
                .or_else(|_| Self::compile(other)),
            _ => Self::compile(other),
        }
    }

    /// The schema as given.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Its format.
    pub fn format(&self) -> SchemaFormat {
        self.schema.format()
    }

    /// For Protobuf, the full name of the message the schema is bound to.
    pub fn protobuf_message(&self) -> Option<&str> {
        match &self.inner {
            Inner::Protobuf(desc) => Some(desc.full_name()),
            _ => None,
        }
    }

    /// For Protobuf, the path of indexes to the bound message (`[0]` for the file's first
    /// top-level message), as the Confluent wire format writes it; empty for other formats.
    pub fn protobuf_message_indexes(&self) -> Vec<u32> {
        match &self.inner {
            Inner::Protobuf(desc) => protobuf::message_indexes(desc),
            _ => Vec::new(),
        }
    }

    /// Checks a JSON value against a JSON Schema; other formats have nothing to check here.
    pub(crate) fn validate_json(&self, value: &Value) -> Result<(), SchemaError> {
        match &self.inner {
            Inner::Json(validator) => json_schema::validate(validator, value),
            _ => Ok(()),
        }
    }

    /// Decodes data written with this schema into a JSON value (for JSON-level upcasters);
    /// with `reader`, Avro data is first resolved into the reader's schema.
    ///
    /// Avro values map to JSON as apache-avro does (unions unwrapped, enums as strings, bytes as
    /// arrays of numbers); Protobuf messages use the canonical proto3 JSON mapping (camelCase
    /// names, 64-bit integers as strings).
    pub fn decode_value(
        &self,
        data: &[u8],
        reader: Option<&CompiledSchema>,
    ) -> Result<Value, SchemaError> {
        match &self.inner {
            Inner::Json(validator) => {
                let value = json::parse(data)?;
                json_schema::validate(validator, &value)?;
                Ok(value)
            }
            Inner::Avro(writer) => {
                let reader = match reader.map(|r| &r.inner) {
                    Some(Inner::Avro(r)) => Some(r),
                    _ => None,
                };
                avro::decode_value(writer, data, reader)
            }
            Inner::Protobuf(desc) => {
                let desc = match reader.map(|r| &r.inner) {
                    Some(Inner::Protobuf(r)) => r,
                    _ => desc,
                };
                protobuf::decode_value(desc, data)
            }
        }
    }

    /// Encodes a JSON value with this schema (the inverse of [`decode_value`](Self::decode_value)),
    /// validating it first.
    pub fn encode_value(&self, value: &Value) -> Result<Vec<u8>, SchemaError> {
        match &self.inner {
            Inner::Json(validator) => {
                json_schema::validate(validator, value)?;
                json::to_vec(value)
            }
            Inner::Avro(schema) => avro::encode_value(schema, value),
            Inner::Protobuf(desc) => protobuf::encode_value(desc, value),
        }
    }
}

/// Decodes data without any schema into a JSON value: plain JSON.
pub(crate) fn decode_plain_value(data: &[u8]) -> Result<Value, SchemaError> {
    json::parse(data)
}

/// Encodes a JSON value without any schema: plain JSON.
pub(crate) fn encode_plain_value(value: &Value) -> Result<Vec<u8>, SchemaError> {
    json::to_vec(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_compare_without_parameters_and_with_aliases() {
        assert!(same_media_type(
            "Application/JSON; charset=utf-8",
            JSON_CONTENT_TYPE
        ));
        assert!(same_media_type("avro/binary", AVRO_CONTENT_TYPE));
        assert!(same_media_type(
            "application/x-protobuf",
            PROTOBUF_CONTENT_TYPE
        ));
        assert!(!same_media_type("application/json", AVRO_CONTENT_TYPE));
        assert!(!same_media_type("", JSON_CONTENT_TYPE));
    }

    #[test]
    fn invalid_schemas_are_refused_per_format() {
        for schema in [
            Schema::avro(r#"{"type":"record","name":"A","fields":[{"name":"x","type":"nope"}]}"#),
            Schema::json(r#"{"type": 12}"#),
            Schema::json("not json"),
            Schema::protobuf("syntax = \"proto3\"; message A { strin x = 1; }"),
            Schema::protobuf("syntax = \"proto3\";"),
        ] {
            let err = CompiledSchema::compile(&schema).unwrap_err();
            assert!(
                matches!(err, SchemaError::InvalidSchema { format, .. } if format == schema.format()),
                "{schema:?}: {err}"
            );
        }
    }

    #[test]
    fn protobuf_schema_binds_the_named_or_first_message() {
        let schema = Schema::protobuf(
            "syntax = \"proto3\"; package shop; message A { int64 x = 1; } message B { string y = 1; }",
        );
        let first = CompiledSchema::compile(&schema).unwrap();
        assert_eq!(first.protobuf_message(), Some("shop.A"));
        let named = CompiledSchema::compile_message(&schema, Some("shop.B")).unwrap();
        assert_eq!(named.protobuf_message(), Some("shop.B"));
        let other = Schema::protobuf(
            "syntax = \"proto3\"; package shop; message Z {} message B { string y = 1; int32 z = 2; }",
        );
        assert_eq!(
            named.compile_like(&other).unwrap().protobuf_message(),
            Some("shop.B")
        );
        let missing = CompiledSchema::compile_message(&schema, Some("shop.C")).unwrap_err();
        assert!(missing.to_string().contains("shop.C"), "{missing}");
    }

    #[test]
    fn values_round_trip_through_every_format() {
        let cases = [
            (
                Schema::json(r#"{"type":"object","properties":{"n":{"type":"integer"}}}"#),
                serde_json::json!({"n": 3}),
            ),
            (
                Schema::avro(
                    r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"},{"name":"s","type":["null","string"],"default":null}]}"#,
                ),
                serde_json::json!({"n": 3, "s": "x"}),
            ),
            (
                Schema::protobuf("syntax = \"proto3\"; message R { int32 n = 1; string s = 2; }"),
                serde_json::json!({"n": 3, "s": "x"}),
            ),
        ];
        for (schema, value) in cases {
            let compiled = CompiledSchema::compile(&schema).unwrap();
            let data = compiled.encode_value(&value).unwrap();
            assert_eq!(
                compiled.decode_value(&data, None).unwrap(),
                value,
                "{schema:?}"
            );
        }
        let plain = encode_plain_value(&serde_json::json!([1, 2])).unwrap();
        assert_eq!(
            decode_plain_value(&plain).unwrap(),
            serde_json::json!([1, 2])
        );
    }
}
