//! Schema registries: where schemas live, get their ids and versions, and where a subject's
//! compatibility mode is enforced.

pub mod confluent;
pub mod file;
pub mod memory;
mod store;
pub mod wire;

pub use confluent::ConfluentRegistry;
pub use file::FileRegistry;
pub use memory::MemoryRegistry;

use async_trait::async_trait;

use crate::compat::{self, CompatibilityReport};
use crate::error::SchemaError;
use crate::schema::{CompatibilityMode, RegisteredSchema, Schema};

/// A store of schemas by subject, with global ids and per-subject versions.
///
/// Registration enforces the subject's [`CompatibilityMode`]: an incompatible schema is refused
/// with [`SchemaError::Incompatible`] listing every violation. Registering a schema the subject
/// already holds returns the existing registration (same id, same version).
#[async_trait]
pub trait SchemaRegistry: Send + Sync {
    /// Registers `schema` under `subject`, returning its id and version.
    async fn register(
        &self,
        subject: &str,
        schema: Schema,
    ) -> Result<RegisteredSchema, SchemaError>;

    /// The registration of `schema` under `subject`, if it is registered there.
    async fn lookup(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<Option<RegisteredSchema>, SchemaError>;

    /// The schema with this global id.
    async fn schema_by_id(&self, id: u32) -> Result<Schema, SchemaError>;

    /// One version of a subject.
    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, SchemaError>;

    /// The newest version of a subject.
    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, SchemaError>;

    /// The versions of a subject, ascending.
    async fn versions(&self, subject: &str) -> Result<Vec<u32>, SchemaError>;

    /// Every subject, sorted.
    async fn subjects(&self) -> Result<Vec<String>, SchemaError>;

    /// The mode in force for `subject` (its own, or the registry's default).
    async fn compatibility(&self, subject: &str) -> Result<CompatibilityMode, SchemaError>;

    /// Sets the mode of `subject`.
    async fn set_compatibility(
        &self,
        subject: &str,
        mode: CompatibilityMode,
    ) -> Result<(), SchemaError>;

    /// Checks `schema` against `subject`'s history under its mode, without registering it.
    async fn check_compatibility(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<CompatibilityReport, SchemaError> {
        let mode = self.compatibility(subject).await?;
        let history = match self.versions(subject).await {
            Ok(versions) => {
                let mut history = Vec::with_capacity(versions.len());
                for v in versions {
                    history.push((v, self.version(subject, v).await?.schema));
                }
                history
            }
            Err(SchemaError::SubjectNotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        compat::check(mode, schema, &history)
    }
}
