//! A schema registry held in memory: for tests, examples and single-process applications.
//!
//! It follows the Confluent Schema Registry's semantics, so that code tested against it behaves the
//! same against a real registry:
//!
//! - ids are global and start at 1; a schema registered under a second subject gets the id it
//!   already has (schemas are compared after normalisation, see below);
//! - versions are per subject and start at 1;
//! - registering a schema the subject already holds returns the existing registration;
//! - registration enforces the subject's [`CompatibilityMode`] (the registry's default,
//!   [`CompatibilityMode::Backward`] unless configured, when the subject has none of its own);
//!   under [`CompatibilityMode::None`] nothing is checked;
//! - a schema that does not parse is refused with [`SchemaError::InvalidSchema`].
//!
//! Schemas are compared after a cheap, format-appropriate normalisation, so that reformatting a
//! schema does not make a new version: Avro and JSON Schema documents are compared as JSON with
//! object keys sorted and whitespace dropped; Protobuf files are compared by their compiled
//! descriptors, which ignore whitespace and comments.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::RwLock;

use super::SchemaRegistry;
use super::store::{Plan, Store};
use crate::compat::CompatibilityReport;
use crate::error::SchemaError;
use crate::schema::{CompatibilityMode, RegisteredSchema, Schema};

/// A schema registry in memory.
///
/// Cloning it is cheap and the clones share the same schemas, so one registry can be handed to a
/// publisher and a consumer alike.
///
/// ```
/// use busway_schema::registry::MemoryRegistry;
/// use busway_schema::{CompatibilityMode, Schema, SchemaRegistry};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let registry = MemoryRegistry::new();
/// let v1 = Schema::json(r#"{"type":"object","properties":{"id":{"type":"integer"}}}"#);
/// let registered = registry.register("orders-value", v1.clone()).await?;
/// assert_eq!((registered.id, registered.version), (1, 1));
///
/// // The same schema, reformatted, is the same registration.
/// let again = Schema::json(r#"{ "properties": { "id": { "type": "integer" } }, "type": "object" }"#);
/// assert_eq!(registry.register("orders-value", again).await?, registered);
/// assert_eq!(registry.schema_by_id(1).await?, v1);
/// assert_eq!(registry.compatibility("orders-value").await?, CompatibilityMode::Backward);
/// # Ok::<(), busway_schema::SchemaError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryRegistry {
    store: Arc<RwLock<Store>>,
}

impl MemoryRegistry {
    /// An empty registry whose default mode is [`CompatibilityMode::Backward`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry with `mode` as the default for subjects that have no mode of their own.
    pub fn with_default_mode(mode: CompatibilityMode) -> Self {
        Self {
            store: Arc::new(RwLock::new(Store::new(mode))),
        }
    }

    /// The mode of subjects that have none of their own.
    pub async fn default_mode(&self) -> CompatibilityMode {
        self.store.read().await.default_mode()
    }
}

#[async_trait]
impl SchemaRegistry for MemoryRegistry {
    async fn register(
        &self,
        subject: &str,
        schema: Schema,
    ) -> Result<RegisteredSchema, SchemaError> {
        let mut store = self.store.write().await;
        match store.plan_register(subject, schema)? {
            Plan::Existing(registered) => Ok(registered),
            Plan::New(new) => Ok(store.commit(new)),
        }
    }

    async fn lookup(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<Option<RegisteredSchema>, SchemaError> {
        self.store.read().await.lookup(subject, schema)
    }

    async fn schema_by_id(&self, id: u32) -> Result<Schema, SchemaError> {
        self.store.read().await.schema_by_id(id)
    }

    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, SchemaError> {
        self.store.read().await.version(subject, version)
    }

    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, SchemaError> {
        self.store.read().await.latest(subject)
    }

    async fn versions(&self, subject: &str) -> Result<Vec<u32>, SchemaError> {
        self.store.read().await.versions(subject)
    }

    async fn subjects(&self) -> Result<Vec<String>, SchemaError> {
        Ok(self.store.read().await.subjects())
    }

    async fn compatibility(&self, subject: &str) -> Result<CompatibilityMode, SchemaError> {
        Ok(self.store.read().await.compatibility(subject))
    }

    async fn set_compatibility(
        &self,
        subject: &str,
        mode: CompatibilityMode,
    ) -> Result<(), SchemaError> {
        self.store.write().await.set_compatibility(subject, mode)
    }

    async fn check_compatibility(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<CompatibilityReport, SchemaError> {
        self.store.read().await.check(subject, schema)
    }
}
