//! What a schema is: a format and a definition, and what a registry knows about it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::SchemaError;

/// The language a schema is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchemaFormat {
    /// Apache Avro (a JSON schema document, `.avsc`).
    Avro,
    /// JSON Schema (draft 2020-12 unless the document's `$schema` says otherwise).
    Json,
    /// Protocol Buffers (a `.proto` file in proto3 or proto2 syntax).
    Protobuf,
}

impl SchemaFormat {
    /// The name the Confluent Schema Registry uses (`AVRO`, `JSON`, `PROTOBUF`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Avro => "AVRO",
            Self::Json => "JSON",
            Self::Protobuf => "PROTOBUF",
        }
    }

    /// The usual file extension of a schema of this format, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Avro => "avsc",
            Self::Json => "json",
            Self::Protobuf => "proto",
        }
    }
}

impl fmt::Display for SchemaFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SchemaFormat {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, SchemaError> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Ok(Self::Avro),
            "JSON" => Ok(Self::Json),
            "PROTOBUF" => Ok(Self::Protobuf),
            _ => Err(SchemaError::Config {
                field: "schemaType".into(),
                reason: format!("unknown schema format `{s}` (expected AVRO, JSON or PROTOBUF)"),
            }),
        }
    }
}

/// A schema: its format and its definition as text.
///
/// ```
/// use busway_schema::{Schema, SchemaFormat};
///
/// let schema = Schema::avro(r#"{"type":"record","name":"OrderPlaced","fields":[{"name":"order","type":"long"}]}"#);
/// assert_eq!(schema.format(), SchemaFormat::Avro);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schema {
    format: SchemaFormat,
    definition: String,
}

impl Schema {
    /// A schema of any format.
    pub fn new(format: SchemaFormat, definition: impl Into<String>) -> Self {
        Self {
            format,
            definition: definition.into(),
        }
    }

    /// An Avro schema (`.avsc` JSON).
    pub fn avro(definition: impl Into<String>) -> Self {
        Self::new(SchemaFormat::Avro, definition)
    }

    /// A JSON Schema document.
    pub fn json(definition: impl Into<String>) -> Self {
        Self::new(SchemaFormat::Json, definition)
    }

    /// A Protobuf schema (`.proto` source).
    pub fn protobuf(definition: impl Into<String>) -> Self {
        Self::new(SchemaFormat::Protobuf, definition)
    }

    /// The format.
    pub fn format(&self) -> SchemaFormat {
        self.format
    }

    /// The definition, as registered.
    pub fn definition(&self) -> &str {
        &self.definition
    }
}

/// A schema as a registry holds it: under a subject, with a global id and a per-subject version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredSchema {
    /// Global id (the one the Confluent wire format carries).
    pub id: u32,
    /// The subject (usually one per event type).
    pub subject: String,
    /// Version within the subject, from 1.
    pub version: u32,
    /// The schema.
    pub schema: Schema,
}

/// Which earlier schemas of a subject a new one must stay compatible with, and in which direction.
///
/// The names and meanings are the Confluent Schema Registry's:
///
/// | mode | a consumer on the new schema reads old data | a consumer on an old schema reads new data | checked against |
/// |---|---|---|---|
/// | `NONE` | not checked | not checked | nothing |
/// | `BACKWARD` | yes | - | the latest version |
/// | `BACKWARD_TRANSITIVE` | yes | - | every version |
/// | `FORWARD` | - | yes | the latest version |
/// | `FORWARD_TRANSITIVE` | - | yes | every version |
/// | `FULL` | yes | yes | the latest version |
/// | `FULL_TRANSITIVE` | yes | yes | every version |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityMode {
    /// No check.
    None,
    /// New readers read data written with the latest schema (the Confluent default).
    #[default]
    Backward,
    /// New readers read data written with every earlier schema.
    BackwardTransitive,
    /// Readers on the latest schema read data written with the new one.
    Forward,
    /// Readers on every earlier schema read data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the latest schema.
    Full,
    /// Backward and forward against every earlier schema.
    FullTransitive,
}

impl CompatibilityMode {
    /// The Confluent name, e.g. `BACKWARD_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether data written with older schemas must be readable with the new one.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Whether data written with the new schema must be readable with older ones.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Whether the check covers every earlier version rather than only the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    /// Every mode, for tables and tests.
    pub const ALL: [CompatibilityMode; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityMode {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, SchemaError> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| SchemaError::Config {
                field: "compatibility".into(),
                reason: format!("unknown compatibility mode `{s}`"),
            })
    }
}
