//! The JSON bodies the registry's REST API sends and receives.

use serde::Deserialize;
use serde_json::json;

use crate::error::SchemaError;
use crate::schema::{RegisteredSchema, Schema, SchemaFormat};

#[derive(Deserialize)]
pub(super) struct IdBody {
    pub(super) id: u32,
    #[serde(default)]
    pub(super) version: Option<u32>,
}

#[derive(Deserialize)]
pub(super) struct SchemaBody {
    pub(super) schema: String,
    #[serde(rename = "schemaType", default)]
    pub(super) schema_type: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct SubjectVersionBody {
    pub(super) subject: String,
    pub(super) id: u32,
    pub(super) version: u32,
    pub(super) schema: String,
    #[serde(rename = "schemaType", default)]
    pub(super) schema_type: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct SubjectVersionRef {
    pub(super) subject: String,
    pub(super) version: u32,
}

#[derive(Deserialize)]
pub(super) struct ConfigBody {
    #[serde(rename = "compatibilityLevel", alias = "compatibility")]
    pub(super) compatibility_level: String,
}

#[derive(Deserialize)]
pub(super) struct CompatibilityBody {
    pub(super) is_compatible: bool,
    #[serde(default)]
    pub(super) messages: Vec<String>,
}

/// The format a registry names; an absent `schemaType` means Avro, the registry's first format.
pub(super) fn format_of(schema_type: Option<&str>) -> Result<SchemaFormat, SchemaError> {
    schema_type.map_or(Ok(SchemaFormat::Avro), |t| {
        t.parse().map_err(|_| SchemaError::Registry {
            status: 200,
            message: format!("unknown schemaType `{t}` in the registry's answer"),
        })
    })
}

impl SubjectVersionBody {
    pub(super) fn into_registered(self) -> Result<RegisteredSchema, SchemaError> {
        let format = format_of(self.schema_type.as_deref())?;
        Ok(RegisteredSchema {
            id: self.id,
            subject: self.subject,
            version: self.version,
            schema: Schema::new(format, self.schema),
        })
    }
}

pub(super) fn schema_body(schema: &Schema) -> serde_json::Value {
    json!({
        "schema": schema.definition(),
        "schemaType": schema.format().as_str(),
        "references": [],
    })
}
