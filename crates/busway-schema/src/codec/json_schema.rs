//! JSON validated against a JSON Schema.

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Codec, CompiledSchema, JSON_CONTENT_TYPE};
use crate::error::SchemaError;
use crate::schema::{Schema, SchemaFormat};

/// How many violations an error message lists at most; the rest are counted.
const MAX_LISTED: usize = 8;

/// JSON through serde, validated against a JSON Schema when encoding and when decoding.
///
/// Decoding validates the data against the schema it was written with (the message's version),
/// then deserializes it; fields the Rust type does not have are ignored, so a consumer on an older
/// version reads newer events when the schemas allow it.
///
/// ```
/// use busway_schema::codec::{Codec, JsonSchemaCodec};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Payment { cents: i64 }
///
/// let codec = JsonSchemaCodec::<Payment>::new(
///     r#"{"type":"object","properties":{"cents":{"type":"integer","minimum":0}},"required":["cents"]}"#,
/// )?;
/// let err = codec.encode(&Payment { cents: -5 }).unwrap_err();
/// assert!(matches!(err, busway_schema::SchemaError::Validation(_)));
/// assert!(err.to_string().contains("/cents"), "{err}");
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
pub struct JsonSchemaCodec<T> {
    schema: CompiledSchema,
    _type: PhantomData<fn() -> T>,
}

impl<T> JsonSchemaCodec<T> {
    /// Compiles `schema` (a JSON Schema document) once; an invalid schema is refused with
    /// [`SchemaError::InvalidSchema`].
    pub fn new(schema: &str) -> Result<Self, SchemaError> {
        Ok(Self {
            schema: CompiledSchema::compile(&Schema::json(schema))?,
            _type: PhantomData,
        })
    }
}

impl<T> fmt::Debug for JsonSchemaCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSchemaCodec")
            .field("schema", &self.schema)
            .finish()
    }
}

impl<T> Codec<T> for JsonSchemaCodec<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    fn content_type(&self) -> &str {
        JSON_CONTENT_TYPE
    }

    fn schema(&self) -> Option<&CompiledSchema> {
        Some(&self.schema)
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, SchemaError> {
        let json = serde_json::to_value(value).map_err(|e| SchemaError::Encode(e.to_string()))?;
        self.schema.validate_json(&json)?;
        serde_json::to_vec(&json).map_err(|e| SchemaError::Encode(e.to_string()))
    }

    fn decode(&self, data: &[u8], writer: Option<&CompiledSchema>) -> Result<T, SchemaError> {
        let json = super::json::parse(data)?;
        writer.unwrap_or(&self.schema).validate_json(&json)?;
        serde_json::from_value(json)
            .map_err(|e| SchemaError::Decode(format!("not the expected JSON: {e}")))
    }
}

/// Parses and compiles a JSON Schema document.
pub(super) fn compile(definition: &str) -> Result<jsonschema::Validator, SchemaError> {
    let invalid = |reason: String| SchemaError::InvalidSchema {
        format: SchemaFormat::Json,
        reason,
    };
    let document: Value =
        serde_json::from_str(definition).map_err(|e| invalid(format!("not JSON: {e}")))?;
    // Offline: a `$ref` to another document is refused rather than fetched, so compiling never
    // blocks on the network (nor on a blocking HTTP client inside an async runtime). Formats
    // (`email`, `date-time`, ...) are asserted, not merely annotated.
    jsonschema::options()
        .offline()
        .should_validate_formats(true)
        .build(&document)
        .map_err(|e| invalid(e.to_string()))
}

/// Validates `value`, listing every violation (up to [`MAX_LISTED`]) with its location.
pub(super) fn validate(
    validator: &jsonschema::Validator,
    value: &Value,
) -> Result<(), SchemaError> {
    let mut listed = Vec::new();
    let mut more = 0usize;
    for error in validator.iter_errors(value) {
        if listed.len() < MAX_LISTED {
            let path = error.instance_path().to_string();
            let path = if path.is_empty() {
                "/".to_owned()
            } else {
                path
            };
            listed.push(format!("{path}: {error}"));
        } else {
            more += 1;
        }
    }
    if listed.is_empty() {
        return Ok(());
    }
    let mut message = listed.join("; ");
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    Err(SchemaError::Validation(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "email": {"type": "string", "format": "email", "maxLength": 40}
        },
        "required": ["id", "email"]
    }"#;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Customer {
        id: i64,
        email: String,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct CustomerId {
        id: i64,
    }

    #[test]
    fn round_trip() {
        let codec = JsonSchemaCodec::<Customer>::new(V1).unwrap();
        let c = Customer {
            id: 3,
            email: "a@b.example".into(),
        };
        let data = codec.encode(&c).unwrap();
        assert_eq!(codec.decode(&data, None).unwrap(), c);
        assert_eq!(codec.schema().unwrap().format(), SchemaFormat::Json);
    }

    #[test]
    fn encode_refuses_an_invalid_event_naming_every_violation() {
        let codec = JsonSchemaCodec::<Customer>::new(V1).unwrap();
        let err = codec
            .encode(&Customer {
                id: 0,
                email: "x".repeat(50),
            })
            .unwrap_err();
        let SchemaError::Validation(message) = &err else {
            panic!("expected a validation error, got {err}");
        };
        assert!(
            message.contains("/id") && message.contains("minimum"),
            "{message}"
        );
        assert!(message.contains("/email"), "{message}");
    }

    #[test]
    fn decode_validates_against_the_writer_schema() {
        let codec = JsonSchemaCodec::<CustomerId>::new(
            r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#,
        )
        .unwrap();
        // Valid for the reader's schema, but the writer's schema requires an email.
        let writer = CompiledSchema::compile(&Schema::json(V1)).unwrap();
        let err = codec.decode(br#"{"id":4}"#, Some(&writer)).unwrap_err();
        assert!(
            matches!(&err, SchemaError::Validation(m) if m.contains("email")),
            "{err}"
        );
        // Data valid for the writer decodes into the older type, ignoring the new field.
        let ok = codec
            .decode(br#"{"id":4,"email":"a@b.example"}"#, Some(&writer))
            .unwrap();
        assert_eq!(ok, CustomerId { id: 4 });
        // Garbage is a decode error, not a validation error.
        let err = codec.decode(b"{", None).unwrap_err();
        assert!(matches!(err, SchemaError::Decode(_)), "{err}");
        // Valid for the schema but not the Rust type: a decode error.
        let loose = JsonSchemaCodec::<CustomerId>::new(r#"{"type":"object"}"#).unwrap();
        let err = loose.decode(br#"{"id":"seven"}"#, None).unwrap_err();
        assert!(matches!(err, SchemaError::Decode(_)), "{err}");
    }

    #[test]
    fn formats_are_asserted_and_remote_references_refused() {
        let codec = JsonSchemaCodec::<Customer>::new(V1).unwrap();
        let err = codec
            .encode(&Customer {
                id: 1,
                email: "not an email".into(),
            })
            .unwrap_err();
        assert!(
            matches!(&err, SchemaError::Validation(m) if m.contains("/email") && m.contains("email")),
            "{err}"
        );
        let err = JsonSchemaCodec::<Customer>::new(
            r#"{"$ref": "https://schemas.example/customer.json"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, SchemaError::InvalidSchema { reason, .. } if reason.contains("schemas.example")),
            "{err}"
        );
    }

    #[test]
    fn many_violations_are_counted_not_all_listed() {
        let validator = compile(r#"{"type":"array","items":{"type":"string"}}"#).unwrap();
        let value = serde_json::json!((0..20).collect::<Vec<_>>());
        let err = validate(&validator, &value).unwrap_err().to_string();
        assert!(err.contains("and 12 more"), "{err}");
        assert!(err.contains("/7:") && !err.contains("/8:"), "{err}");
    }
}
