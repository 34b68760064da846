//! A client for the Confluent Schema Registry REST API, and for servers that implement it.
//!
//! The registry server enforces compatibility itself; this client sends it schemas, maps its
//! answers onto [`SchemaRegistry`](super::SchemaRegistry) and [`SchemaError`], and caches what
//! cannot change:
//!
//! | call | request |
//! |---|---|
//! | [`register`](super::SchemaRegistry::register) | `POST /subjects/{s}/versions`, then `GET /schemas/ids/{id}/versions` for the version |
//! | [`lookup`](super::SchemaRegistry::lookup) | `POST /subjects/{s}` |
//! | [`schema_by_id`](super::SchemaRegistry::schema_by_id) | `GET /schemas/ids/{id}` (cached: ids never change) |
//! | [`version`](super::SchemaRegistry::version), [`latest`](super::SchemaRegistry::latest) | `GET /subjects/{s}/versions/{v}`, `.../latest` |
//! | [`versions`](super::SchemaRegistry::versions) | `GET /subjects/{s}/versions` |
//! | [`subjects`](super::SchemaRegistry::subjects) | `GET /subjects` |
//! | [`compatibility`](super::SchemaRegistry::compatibility) | `GET /config/{s}`, falling back to `GET /config` |
//! | [`set_compatibility`](super::SchemaRegistry::set_compatibility) | `PUT /config/{s}` |
//! | [`check_compatibility`](super::SchemaRegistry::check_compatibility) | `POST /compatibility/subjects/{s}/versions/latest?verbose=true` |
//!
//! Errors are classified: the registry's codes 40401/40402/40403 become
//! [`SchemaError::SubjectNotFound`]/[`SchemaError::VersionNotFound`]/[`SchemaError::SchemaNotFound`],
//! HTTP 409 [`SchemaError::Incompatible`] (with the server's message), 422
//! [`SchemaError::InvalidSchema`], 401/403 [`SchemaError::Auth`]; connection failures, timeouts,
//! 408, 429 and 5xx are [`SchemaError::Unavailable`], the one worth retrying; anything else is
//! [`SchemaError::Registry`] with the status and the server's message.

mod bodies;
mod builder;
mod endpoints;
mod errors;
mod http;
#[cfg(test)]
mod tests;

pub use builder::ConfluentRegistryBuilder;

use std::collections::HashMap;
use std::fmt;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::error::SchemaError;
use crate::schema::{RegisteredSchema, Schema};

/// How long a request may take, end to end, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting may take, unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for a Confluent-compatible schema registry.
///
/// ```no_run
/// use std::time::Duration;
/// use busway_schema::registry::ConfluentRegistry;
/// use busway_schema::{Schema, SchemaRegistry};
///
/// # async fn run() -> Result<(), busway_schema::SchemaError> {
/// let registry = ConfluentRegistry::builder("https://registry.example.com")
///     .basic_auth("api-key", "api-secret")
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// let schema = Schema::avro(r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#);
/// let registered = registry.register("orders-value", schema).await?;
/// println!("schema id {} version {}", registered.id, registered.version);
/// # Ok(())
/// # }
/// ```
pub struct ConfluentRegistry {
    http: reqwest::Client,
    base: Url,
    username: Option<String>,
    password: Option<SecretString>,
    /// Ids name one schema forever, so what an id names is cached without expiry.
    schemas_by_id: RwLock<HashMap<u32, Schema>>,
    /// A schema registered under a subject keeps its id and version (short of an administrator
    /// deleting it), so registrations are cached too: producers register at every start.
    registrations: RwLock<HashMap<(String, Schema), RegisteredSchema>>,
}

impl fmt::Debug for ConfluentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is a `SecretString`, whose Debug output is redacted.
        f.debug_struct("ConfluentRegistry")
            .field("url", &self.base.as_str())
            .field("username", &self.username)
            .field("password", &self.password)
            .finish_non_exhaustive()
    }
}

impl ConfluentRegistry {
    /// A client for the registry at `url` with default settings.
    pub fn new(url: impl Into<String>) -> Result<Self, SchemaError> {
        Self::builder(url).build()
    }

    /// Settings for a client of the registry at `url`.
    pub fn builder(url: impl Into<String>) -> ConfluentRegistryBuilder {
        ConfluentRegistryBuilder {
            url: url.into(),
            username: None,
            password: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The registry's base URL (without credentials).
    pub fn url(&self) -> &Url {
        &self.base
    }

    fn cached_registration(&self, subject: &str, schema: &Schema) -> Option<RegisteredSchema> {
        self.registrations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(subject.to_owned(), schema.clone()))
            .cloned()
    }

    fn remember(&self, registered: &RegisteredSchema) {
        self.schemas_by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(registered.id)
            .or_insert_with(|| registered.schema.clone());
        self.registrations
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                (registered.subject.clone(), registered.schema.clone()),
                registered.clone(),
            );
    }
}
