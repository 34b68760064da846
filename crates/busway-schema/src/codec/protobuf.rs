//! Protocol Buffers through prost, with the `.proto` source as the registered schema.

use std::fmt;
use std::marker::PhantomData;

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::Value;

use super::{Codec, CompiledSchema, Inner, PROTOBUF_CONTENT_TYPE};
use crate::error::SchemaError;
use crate::schema::{Schema, SchemaFormat};

/// The name the schema's source is compiled under (imports of other files than the well-known
/// `google/protobuf/*.proto` types are not available to a registered schema).
const FILE_NAME: &str = "busway_event.proto";

/// A Protocol Buffers message type generated or derived with prost, and the `.proto` source
/// that is registered as its schema.
///
/// The wire format carries field numbers, so a reader on another version needs no writer's
/// schema: fields it does not know are skipped, fields the writer did not send take their default.
/// Data is checked only by the wire format, as prost decodes it.
///
/// ```
/// use busway_schema::codec::{Codec, ProtobufCodec};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Shipped {
///     #[prost(int64, tag = "1")]
///     order: i64,
/// }
///
/// let codec = ProtobufCodec::<Shipped>::new(
///     "syntax = \"proto3\"; package shop; message Shipped { int64 order = 1; }",
/// )?;
/// assert_eq!(codec.content_type(), "application/protobuf");
/// let data = codec.encode(&Shipped { order: 5 })?;
/// assert_eq!(codec.decode(&data, None)?, Shipped { order: 5 });
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
pub struct ProtobufCodec<T> {
    schema: CompiledSchema,
    _type: PhantomData<fn() -> T>,
}

impl<T> ProtobufCodec<T> {
    /// Compiles `proto` (a `.proto` file) once, for the first message it defines; an invalid
    /// file is refused with [`SchemaError::InvalidSchema`].
    pub fn new(proto: &str) -> Result<Self, SchemaError> {
        Self::compile(proto, None)
    }

    /// Like [`new`](Self::new), for the message with this full name (`package.Message`).
    pub fn with_message(proto: &str, message: &str) -> Result<Self, SchemaError> {
        Self::compile(proto, Some(message))
    }

    fn compile(proto: &str, message: Option<&str>) -> Result<Self, SchemaError> {
        Ok(Self {
            schema: CompiledSchema::compile_message(&Schema::protobuf(proto), message)?,
            _type: PhantomData,
        })
    }
}

impl<T> fmt::Debug for ProtobufCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtobufCodec")
            .field("schema", &self.schema)
            .finish()
    }
}

impl<T> Codec<T> for ProtobufCodec<T>
where
    T: prost::Message + Default + 'static,
{
    fn content_type(&self) -> &str {
        PROTOBUF_CONTENT_TYPE
    }

    fn schema(&self) -> Option<&CompiledSchema> {
        Some(&self.schema)
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, SchemaError> {
        Ok(value.encode_to_vec())
    }

    fn decode(&self, data: &[u8], writer: Option<&CompiledSchema>) -> Result<T, SchemaError> {
        if let Some(writer) = writer
            && !matches!(writer.inner, Inner::Protobuf(_))
        {
            return Err(SchemaError::Decode(format!(
                "data was written with a {} schema, not Protobuf",
                writer.format()
            )));
        }
        T::decode(data)
            .map_err(|e| SchemaError::Decode(format!("not the expected Protobuf message: {e}")))
    }
}

/// Compiles a `.proto` source and picks a message: the one named, or the first defined.
pub(super) fn compile(
    definition: &str,
    message: Option<&str>,
) -> Result<MessageDescriptor, SchemaError> {
    let invalid = |reason: String| SchemaError::InvalidSchema {
        format: SchemaFormat::Protobuf,
        reason,
    };
    let mut resolver = ChainFileResolver::new();
    resolver.add(OwnedSource(definition.to_owned()));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler
        .open_file(FILE_NAME)
        .map_err(|e| invalid(e.to_string()))?;
    let pool = compiler.descriptor_pool();
    match message {
        Some(name) => pool
            .get_message_by_name(name)
            .ok_or_else(|| invalid(format!("the file defines no message `{name}`"))),
        None => pool
            .get_file_by_name(FILE_NAME)
            .and_then(|file| file.messages().next())
            .ok_or_else(|| invalid("the file defines no message".to_owned())),
    }
}

/// Serves the schema's source under [`FILE_NAME`]; protox's resolver chain wants owned
/// resolvers, so the source is copied once per compilation.
struct OwnedSource(String);

impl FileResolver for OwnedSource {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == FILE_NAME {
            File::from_source(name, &self.0)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// The indexes leading to `desc`: its position among the file's top-level messages, then among
/// each enclosing message's nested ones (in declaration order, map entries included, as the
/// descriptor lists them).
pub(super) fn message_indexes(desc: &MessageDescriptor) -> Vec<u32> {
    let mut path = Vec::new();
    let mut current = desc.clone();
    loop {
        let parent = current.parent_message();
        let siblings: Vec<MessageDescriptor> = match &parent {
            Some(parent) => parent.child_messages().collect(),
            None => current.parent_file().messages().collect(),
        };
        let index = siblings
            .iter()
            .position(|m| m.full_name() == current.full_name())
            .unwrap_or_default();
        path.push(u32::try_from(index).unwrap_or(u32::MAX));
        match parent {
            Some(parent) => current = parent,
            None => break,
        }
    }
    path.reverse();
    path
}

/// Decodes a message into its canonical proto3 JSON form.
pub(super) fn decode_value(desc: &MessageDescriptor, data: &[u8]) -> Result<Value, SchemaError> {
    let message = DynamicMessage::decode(desc.clone(), data)
        .map_err(|e| SchemaError::Decode(format!("not a {} message: {e}", desc.full_name())))?;
    serde_json::to_value(&message).map_err(|e| SchemaError::Decode(e.to_string()))
}

/// Encodes the proto3 JSON form of a message.
pub(super) fn encode_value(
    desc: &MessageDescriptor,
    value: &Value,
) -> Result<Vec<u8>, SchemaError> {
    let message = DynamicMessage::deserialize(desc.clone(), value.clone()).map_err(|e| {
        SchemaError::Validation(format!("not a valid {} message: {e}", desc.full_name()))
    })?;
    Ok(message.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"
        syntax = "proto3";
        package shop;
        message OrderShipped {
            int64 order = 1;
            string carrier = 2;
        }
    "#;
    const V2: &str = r#"
        syntax = "proto3";
        package shop;
        import "google/protobuf/timestamp.proto";
        message OrderShipped {
            int64 order = 1;
            string carrier = 2;
            string tracking = 3;
            google.protobuf.Timestamp at = 4;
        }
    "#;

    #[derive(Clone, PartialEq, prost::Message)]
    struct ShippedV1 {
        #[prost(int64, tag = "1")]
        order: i64,
        #[prost(string, tag = "2")]
        carrier: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ShippedV2 {
        #[prost(int64, tag = "1")]
        order: i64,
        #[prost(string, tag = "2")]
        carrier: String,
        #[prost(string, tag = "3")]
        tracking: String,
    }

    #[test]
    fn round_trip() {
        let codec = ProtobufCodec::<ShippedV2>::new(V2).unwrap();
        let value = ShippedV2 {
            order: 1,
            carrier: "DHL".into(),
            tracking: "T-1".into(),
        };
        let data = codec.encode(&value).unwrap();
        assert_eq!(codec.decode(&data, None).unwrap(), value);
        assert_eq!(
            codec.schema().unwrap().protobuf_message(),
            Some("shop.OrderShipped")
        );
    }

    #[test]
    fn older_reader_skips_unknown_fields_and_newer_reader_defaults_missing_ones() {
        let v2 = ProtobufCodec::<ShippedV2>::new(V2).unwrap();
        let v1 = ProtobufCodec::<ShippedV1>::new(V1).unwrap();
        let writer_v2 = CompiledSchema::compile(&Schema::protobuf(V2)).unwrap();
        let newer = v2
            .encode(&ShippedV2 {
                order: 2,
                carrier: "UPS".into(),
                tracking: "T-2".into(),
            })
            .unwrap();
        assert_eq!(
            v1.decode(&newer, Some(&writer_v2)).unwrap(),
            ShippedV1 {
                order: 2,
                carrier: "UPS".into()
            }
        );
        let older = v1
            .encode(&ShippedV1 {
                order: 3,
                carrier: "DPD".into(),
            })
            .unwrap();
        assert_eq!(
            v2.decode(&older, None).unwrap(),
            ShippedV2 {
                order: 3,
                carrier: "DPD".into(),
                tracking: String::new()
            }
        );
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let codec = ProtobufCodec::<ShippedV1>::new(V1).unwrap();
        // Field 1 announced as length-delimited with a length past the end.
        let err = codec.decode(&[0x0a, 0x7f, 0x01], None).unwrap_err();
        assert!(matches!(err, SchemaError::Decode(_)), "{err}");
        let avro = CompiledSchema::compile(&Schema::avro(r#""string""#)).unwrap();
        let err = codec.decode(&[], Some(&avro)).unwrap_err();
        assert!(
            matches!(&err, SchemaError::Decode(m) if m.contains("AVRO")),
            "{err}"
        );
    }

    #[test]
    fn invalid_proto_and_unknown_message_are_refused() {
        let err = ProtobufCodec::<ShippedV1>::new("syntax = \"proto3\"; message {").unwrap_err();
        assert!(matches!(err, SchemaError::InvalidSchema { .. }), "{err}");
        let err = ProtobufCodec::<ShippedV1>::with_message(V1, "shop.Nope").unwrap_err();
        assert!(err.to_string().contains("shop.Nope"), "{err}");
        let err = ProtobufCodec::<ShippedV1>::new(
            "syntax = \"proto3\"; import \"other.proto\"; message A {}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("other.proto"), "{err}");
    }

    #[test]
    fn message_indexes_follow_nesting() {
        let proto = r#"
            syntax = "proto3";
            package p;
            message A { }
            message B {
                map<string, string> tags = 1;
                message C { }
                message D { message E { } }
            }
        "#;
        let index = |name: &str| message_indexes(&compile(proto, Some(name)).unwrap());
        assert_eq!(index("p.A"), [0]);
        assert_eq!(index("p.B"), [1]);
        // The map's entry type is B's first nested message.
        assert_eq!(index("p.B.C"), [1, 1]);
        assert_eq!(index("p.B.D.E"), [1, 2, 0]);
    }

    #[test]
    fn json_form_uses_the_proto3_mapping() {
        let desc = compile(V1, None).unwrap();
        let data = ShippedV1 {
            order: 4,
            carrier: "GLS".into(),
        }
        .encode_to_vec();
        let value = decode_value(&desc, &data).unwrap();
        // 64-bit integers are strings in proto3 JSON.
        assert_eq!(value, serde_json::json!({"order": "4", "carrier": "GLS"}));
        assert_eq!(encode_value(&desc, &value).unwrap(), data);
        let err = encode_value(&desc, &serde_json::json!({"order": "many"})).unwrap_err();
        assert!(matches!(err, SchemaError::Validation(_)), "{err}");
    }
}
