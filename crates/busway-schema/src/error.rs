//! Errors of schema handling, classified so that callers know what to retry.

use crate::compat::Incompatibility;
use crate::schema::{CompatibilityMode, SchemaFormat};

/// Everything that can go wrong with schemas, codecs and registries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A schema definition does not parse or is not a valid schema of its format.
    #[error("invalid {format} schema: {reason}")]
    InvalidSchema {
        /// The schema's format.
        format: SchemaFormat,
        /// What is wrong with it.
        reason: String,
    },
    /// Registration refused: the schema breaks the subject's compatibility mode.
    #[error(
        "schema for subject `{subject}` is not {mode} compatible: {}",
        list(violations)
    )]
    Incompatible {
        /// The subject registered to.
        subject: String,
        /// The subject's mode.
        mode: CompatibilityMode,
        /// Every rule the schema breaks.
        violations: Vec<Incompatibility>,
    },
    /// No such subject.
    #[error("subject `{0}` not found")]
    SubjectNotFound(String),
    /// The subject exists but not this version.
    #[error("version {version} of subject `{subject}` not found")]
    VersionNotFound {
        /// The subject.
        subject: String,
        /// The missing version.
        version: u32,
    },
    /// No schema has this id.
    #[error("schema id {0} not found")]
    SchemaNotFound(u32),
    /// An event does not satisfy its schema (at publish, or at consume: dead-lettered with reason
    /// `schema_validation`).
    #[error("event does not satisfy its schema: {0}")]
    Validation(String),
    /// An event could not be encoded.
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// Bytes could not be decoded into an event.
    #[error("cannot decode event: {0}")]
    Decode(String),
    /// The registry could not be reached, or timed out; worth retrying.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry refused the credentials.
    #[error("schema registry authentication failed: {0}")]
    Auth(String),
    /// The registry answered with an error that retrying will not fix.
    #[error("schema registry error {status}: {message}")]
    Registry {
        /// HTTP status or registry error code.
        status: u32,
        /// The registry's message.
        message: String,
    },
    /// A setting is wrong; names the field.
    #[error("invalid configuration `{field}`: {reason}")]
    Config {
        /// The setting.
        field: String,
        /// Why it is wrong.
        reason: String,
    },
    /// Reading or writing a file-backed registry failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The operation is not available for this format or registry.
    #[error("not supported: {0}")]
    Unsupported(String),
}

fn list(violations: &[Incompatibility]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SchemaError {
    /// Whether the same call may succeed later (registry unreachable or timing out).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<SchemaError> for busway_core::Error {
    fn from(e: SchemaError) -> Self {
        use busway_core::Error;
        match e {
            SchemaError::Unavailable(m) => Error::Connection {
                message: m,
                source: None,
            },
            SchemaError::Auth(m) => Error::Auth(m),
            SchemaError::Config { field, reason } => Error::Config { field, reason },
            SchemaError::Validation(m) => Error::InvalidMessage(format!("schema validation: {m}")),
            SchemaError::Unsupported(m) => Error::Unsupported(m),
            other => Error::Serialization {
                message: other.to_string(),
                source: Some(Box::new(other)),
            },
        }
    }
}
