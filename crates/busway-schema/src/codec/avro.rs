//! Apache Avro binary data, with writer/reader schema resolution.

use std::fmt;
use std::marker::PhantomData;

use apache_avro::Schema as AvroSchema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Names, ResolvedSchema};
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{AVRO_CONTENT_TYPE, Codec, CompiledSchema, Inner};
use crate::error::SchemaError;
use crate::schema::{Schema, SchemaFormat};

/// Avro binary data: one datum per message, without the object-container header (the schema is
/// named by the message's `dataschema`, not embedded).
///
/// Encoding checks the value against the schema and names the field that breaks it. Decoding
/// reads the data with the schema it was *written* with (fetched from the registry by the version
/// the message carries) and resolves it into this codec's schema, the *reader's*, following Avro's
/// resolution rules: fields the reader lacks are skipped, fields the writer lacks take the
/// reader's default, numeric types are promoted.
///
/// ```
/// use busway_schema::codec::{AvroCodec, Codec, CompiledSchema};
/// use busway_schema::Schema;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderV1 { id: i64 }
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct OrderV2 { id: i64, note: String }
///
/// let v1 = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
/// let v2 = r#"{"type":"record","name":"Order","fields":[
///     {"name":"id","type":"long"},{"name":"note","type":"string","default":"none"}]}"#;
/// // Data written by a v1 producer ...
/// let data = AvroCodec::<OrderV1>::new(v1)?.encode(&OrderV1 { id: 7 })?;
/// // ... read by a v2 consumer: the field the writer lacks takes its default.
/// let reader = AvroCodec::<OrderV2>::new(v2)?;
/// let writer = CompiledSchema::compile(&Schema::avro(v1))?;
/// assert_eq!(reader.decode(&data, Some(&writer))?, OrderV2 { id: 7, note: "none".into() });
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
pub struct AvroCodec<T> {
    schema: CompiledSchema,
    _type: PhantomData<fn() -> T>,
}

impl<T> AvroCodec<T> {
    /// Parses `schema` (an `.avsc` document) once; an invalid schema is refused with
    /// [`SchemaError::InvalidSchema`].
    pub fn new(schema: &str) -> Result<Self, SchemaError> {
        Ok(Self {
            schema: CompiledSchema::compile(&Schema::avro(schema))?,
            _type: PhantomData,
        })
    }

    fn own(&self) -> Result<&Compiled, SchemaError> {
        avro_of(&self.schema)
    }
}

impl<T> fmt::Debug for AvroCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvroCodec")
            .field("schema", &self.schema)
            .finish()
    }
}

impl<T> Codec<T> for AvroCodec<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    fn content_type(&self) -> &str {
        AVRO_CONTENT_TYPE
    }

    fn schema(&self) -> Option<&CompiledSchema> {
        Some(&self.schema)
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, SchemaError> {
        let own = self.own()?;
        let value = apache_avro::to_value(value).map_err(|e| SchemaError::Encode(e.to_string()))?;
        write(own, &resolve(value, own)?)
    }

    fn decode(&self, data: &[u8], writer: Option<&CompiledSchema>) -> Result<T, SchemaError> {
        let own = self.own()?;
        let value = match writer {
            Some(writer) => {
                let writer = avro_of(writer)?;
                resolve(read(writer, data)?, own).map_err(|e| match e {
                    SchemaError::Validation(m) => SchemaError::Validation(format!(
                        "data written with another version cannot be resolved into the reader's schema: {m}"
                    )),
                    other => other,
                })?
            }
            None => read(own, data)?,
        };
        apache_avro::from_value(&value).map_err(|e| SchemaError::Decode(e.to_string()))
    }
}

/// The Avro form of a compiled schema, or an error naming the format it has instead.
fn avro_of(schema: &CompiledSchema) -> Result<&Compiled, SchemaError> {
    match &schema.inner {
        Inner::Avro(s) => Ok(s),
        _ => Err(SchemaError::Decode(format!(
            "data was written with a {} schema, not Avro",
            schema.format()
        ))),
    }
}

/// A parsed Avro schema with its named types, resolved once.
pub(super) struct Compiled {
    schema: AvroSchema,
    names: Names,
}

/// Parses an `.avsc` document.
pub(super) fn compile(definition: &str) -> Result<Compiled, SchemaError> {
    let invalid = |e: apache_avro::Error| SchemaError::InvalidSchema {
        format: SchemaFormat::Avro,
        reason: e.to_string(),
    };
    let schema = AvroSchema::parse_str(definition).map_err(invalid)?;
    let names = ResolvedSchema::try_from(&schema)
        .map_err(invalid)?
        .get_names()
        .iter()
        .map(|(name, named)| (name.clone(), (*named).clone()))
        .collect();
    Ok(Compiled { schema, names })
}

/// Reads one datum written with `writer`; the data must hold exactly one.
fn read(writer: &Compiled, data: &[u8]) -> Result<AvroValue, SchemaError> {
    let reader = GenericDatumReader::builder(&writer.schema)
        .build()
        .map_err(|e| SchemaError::Decode(e.to_string()))?;
    let mut rest = data;
    let value = reader
        .read_value(&mut rest)
        .map_err(|e| SchemaError::Decode(format!("not Avro data of the expected schema: {e}")))?;
    if !rest.is_empty() {
        return Err(SchemaError::Decode(format!(
            "{} bytes left over after the Avro datum",
            rest.len()
        )));
    }
    Ok(value)
}

/// Writes a value already resolved into `schema`.
fn write(schema: &Compiled, value: &AvroValue) -> Result<Vec<u8>, SchemaError> {
    let writer = GenericDatumWriter::builder(&schema.schema)
        .build()
        .map_err(|e| SchemaError::Encode(e.to_string()))?;
    let mut out = Vec::new();
    writer
        .write_value_ref(&mut out, value)
        .map_err(|e| SchemaError::Encode(e.to_string()))?;
    Ok(out)
}

/// Resolves `value` into `schema`; on failure, names the field that breaks it.
fn resolve(value: AvroValue, schema: &Compiled) -> Result<AvroValue, SchemaError> {
    let root = &schema.schema;
    let names = &schema.names;
    match value.clone().resolve_with_names(root, names) {
        Ok(resolved) => Ok(resolved),
        Err(e) => Err(SchemaError::Validation(explain(
            &value,
            root,
            names,
            &root_path(root),
            &e,
        ))),
    }
}

fn root_path(schema: &AvroSchema) -> String {
    match schema {
        AvroSchema::Record(r) => r.name.name().to_owned(),
        _ => String::new(),
    }
}

/// Walks `schema` and `value` together down to the first field that does not resolve, so the
/// error says `Order.amount: ...` rather than only what apache-avro reports for the whole value.
fn explain(
    value: &AvroValue,
    schema: &AvroSchema,
    names: &Names,
    path: &str,
    error: &apache_avro::Error,
) -> String {
    let here = |e: &dyn fmt::Display| {
        if path.is_empty() {
            e.to_string()
        } else {
            format!("{path}: {e}")
        }
    };
    match schema {
        AvroSchema::Ref { name } => match names.get(name) {
            Some(named) => explain(value, named, names, path, error),
            None => here(error),
        },
        AvroSchema::Record(record) => {
            let field_value = |name: &str| match value {
                AvroValue::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
                AvroValue::Map(map) => map.get(name),
                _ => None,
            };
            if !matches!(value, AvroValue::Record(_) | AvroValue::Map(_)) {
                return here(&format!(
                    "expected a record {}, got {}",
                    record.name.name(),
                    kind(value)
                ));
            }
            for field in &record.fields {
                let sub = if path.is_empty() {
                    field.name.clone()
                } else {
                    format!("{path}.{}", field.name)
                };
                match field_value(&field.name) {
                    None if field.default.is_none() => {
                        return format!("{sub}: required field is missing");
                    }
                    None => {}
                    Some(v) => {
                        if let Err(e) = v.clone().resolve_with_names(&field.schema, names) {
                            return explain(v, &field.schema, names, &sub, &e);
                        }
                    }
                }
            }
            here(error)
        }
        _ => here(error),
    }
}

fn kind(value: &AvroValue) -> String {
    let debug = format!("{value:?}");
    debug
        .split(['(', ' '])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Reads data written with `writer` into JSON, resolved into `reader` when given.
pub(super) fn decode_value(
    writer: &Compiled,
    data: &[u8],
    reader: Option<&Compiled>,
) -> Result<Value, SchemaError> {
    let mut value = read(writer, data)?;
    if let Some(reader) = reader {
        value = resolve(value, reader)?;
    }
    Value::try_from(value).map_err(|e| SchemaError::Decode(e.to_string()))
}

/// Writes a JSON value with `schema`.
pub(super) fn encode_value(schema: &Compiled, value: &Value) -> Result<Vec<u8>, SchemaError> {
    let value =
        AvroValue::try_from(value.clone()).map_err(|e| SchemaError::Encode(e.to_string()))?;
    write(schema, &resolve(value, schema)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"id","type":"long"},
        {"name":"customer","type":{"type":"record","name":"Customer","fields":[{"name":"name","type":"string"}]}}
    ]}"#;
    const V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"id","type":"long"},
        {"name":"customer","type":{"type":"record","name":"Customer","fields":[{"name":"name","type":"string"}]}},
        {"name":"currency","type":"string","default":"EUR"},
        {"name":"note","type":["null","string"],"default":null}
    ]}"#;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Customer {
        name: String,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct OrderV1 {
        id: i64,
        customer: Customer,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct OrderV2 {
        id: i64,
        customer: Customer,
        currency: String,
        note: Option<String>,
    }

    fn v2(note: Option<&str>) -> OrderV2 {
        OrderV2 {
            id: 9,
            customer: Customer { name: "Ada".into() },
            currency: "CHF".into(),
            note: note.map(Into::into),
        }
    }

    #[test]
    fn round_trip_including_unions() {
        let codec = AvroCodec::<OrderV2>::new(V2).unwrap();
        for value in [v2(None), v2(Some("gift"))] {
            let data = codec.encode(&value).unwrap();
            assert_eq!(codec.decode(&data, None).unwrap(), value);
        }
        assert_eq!(codec.content_type(), "application/avro");
    }

    #[test]
    fn writer_v1_resolves_into_reader_v2_with_defaults() {
        let written = AvroCodec::<OrderV1>::new(V1)
            .unwrap()
            .encode(&OrderV1 {
                id: 5,
                customer: Customer { name: "Bo".into() },
            })
            .unwrap();
        let reader = AvroCodec::<OrderV2>::new(V2).unwrap();
        let writer = CompiledSchema::compile(&Schema::avro(V1)).unwrap();
        let read = reader.decode(&written, Some(&writer)).unwrap();
        assert_eq!(
            read,
            OrderV2 {
                id: 5,
                customer: Customer { name: "Bo".into() },
                currency: "EUR".into(),
                note: None,
            }
        );
        // Without the writer's schema the same bytes are not a v2 datum.
        assert!(reader.decode(&written, None).is_err());
    }

    #[test]
    fn writer_v2_resolves_into_reader_v1_skipping_new_fields() {
        let written = AvroCodec::<OrderV2>::new(V2)
            .unwrap()
            .encode(&v2(Some("x")))
            .unwrap();
        let reader = AvroCodec::<OrderV1>::new(V1).unwrap();
        let writer = CompiledSchema::compile(&Schema::avro(V2)).unwrap();
        assert_eq!(
            reader.decode(&written, Some(&writer)).unwrap(),
            OrderV1 {
                id: 9,
                customer: Customer { name: "Ada".into() }
            }
        );
    }

    #[test]
    fn unresolvable_writer_is_a_validation_error_naming_the_field() {
        // The reader needs `currency` with no default; the writer never wrote it.
        let strict = V2.replace(r#","default":"EUR""#, "");
        let reader = AvroCodec::<OrderV2>::new(&strict).unwrap();
        let writer = CompiledSchema::compile(&Schema::avro(V1)).unwrap();
        let written = AvroCodec::<OrderV1>::new(V1)
            .unwrap()
            .encode(&OrderV1 {
                id: 1,
                customer: Customer { name: "C".into() },
            })
            .unwrap();
        let err = reader.decode(&written, Some(&writer)).unwrap_err();
        assert!(
            matches!(&err, SchemaError::Validation(m) if m.contains("Order.currency")),
            "{err}"
        );
    }

    #[test]
    fn encode_refuses_a_value_that_breaks_the_schema_naming_the_field() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct WrongCustomer {
            name: i64,
        }
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Wrong {
            id: i64,
            customer: WrongCustomer,
        }
        let err = AvroCodec::<Wrong>::new(V1)
            .unwrap()
            .encode(&Wrong {
                id: 1,
                customer: WrongCustomer { name: 3 },
            })
            .unwrap_err();
        assert!(
            matches!(&err, SchemaError::Validation(m) if m.starts_with("Order.customer.name:")),
            "{err}"
        );
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Missing {
            id: i64,
        }
        let err = AvroCodec::<Missing>::new(V1)
            .unwrap()
            .encode(&Missing { id: 1 })
            .unwrap_err();
        assert!(
            matches!(&err, SchemaError::Validation(m) if m.contains("Order.customer: required field is missing")),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_decode_errors() {
        let codec = AvroCodec::<OrderV1>::new(V1).unwrap();
        let err = codec.decode(&[0xff, 0xff, 0xff], None).unwrap_err();
        assert!(matches!(err, SchemaError::Decode(_)), "{err}");
        let mut data = codec
            .encode(&OrderV1 {
                id: 1,
                customer: Customer { name: "C".into() },
            })
            .unwrap();
        data.push(0);
        let err = codec.decode(&data, None).unwrap_err();
        assert!(
            matches!(&err, SchemaError::Decode(m) if m.contains("left over")),
            "{err}"
        );
        let json = CompiledSchema::compile(&Schema::json("{}")).unwrap();
        let err = codec.decode(&data, Some(&json)).unwrap_err();
        assert!(matches!(err, SchemaError::Decode(_)), "{err}");
    }

    #[test]
    fn json_values_resolve_into_the_reader() {
        let v1 = compile(V1).unwrap();
        let v2 = compile(V2).unwrap();
        let data = encode_value(
            &v1,
            &serde_json::json!({"id": 3, "customer": {"name": "D"}}),
        )
        .unwrap();
        let value = decode_value(&v1, &data, Some(&v2)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"id": 3, "customer": {"name": "D"}, "currency": "EUR", "note": null})
        );
        let err = encode_value(&v1, &serde_json::json!({"id": "three"})).unwrap_err();
        assert!(
            matches!(&err, SchemaError::Validation(m) if m.starts_with("Order.id:")),
            "{err}"
        );
    }
}
