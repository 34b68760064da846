//! Writers' schemas fetched from a registry once and kept compiled.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::CompiledSchema;
use crate::error::SchemaError;
use crate::registry::SchemaRegistry;
use crate::schema::CompatibilityMode;

/// The schemas messages were written with, by subject and version, fetched from a registry on
/// first use and kept compiled; and each subject's compatibility mode.
///
/// A registered version never changes, so compiled schemas are kept for the life of the cache.
/// A subject's mode is read once too: a consumer picks up a changed mode when it restarts.
pub struct SchemaCache {
    registry: Option<Arc<dyn SchemaRegistry>>,
    compiled: Mutex<HashMap<(String, u32), Arc<CompiledSchema>>>,
    ids: Mutex<HashMap<(String, u32), u32>>,
    modes: Mutex<HashMap<String, CompatibilityMode>>,
}

impl fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaCache")
            .field("registry", &self.registry.is_some())
            .field("compiled", &lock(&self.compiled).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Entries are inserted whole, so a map whose holder panicked is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SchemaCache {
    /// A cache in front of `registry`; without one, every lookup fails with
    /// [`SchemaError::Config`].
    pub fn new(registry: Option<Arc<dyn SchemaRegistry>>) -> Self {
        Self {
            registry,
            compiled: Mutex::new(HashMap::new()),
            ids: Mutex::new(HashMap::new()),
            modes: Mutex::new(HashMap::new()),
        }
    }

    fn registry(&self, what: &str) -> Result<&Arc<dyn SchemaRegistry>, SchemaError> {
        self.registry.as_ref().ok_or_else(|| SchemaError::Config {
            field: "registry".into(),
            reason: format!("no schema registry configured to look up {what}"),
        })
    }

    /// Version `version` of `subject`, compiled like `like` (for Protobuf: bound to the same
    /// message) when given.
    pub async fn version(
        &self,
        subject: &str,
        version: u32,
        like: Option<&CompiledSchema>,
    ) -> Result<Arc<CompiledSchema>, SchemaError> {
        let key = (subject.to_owned(), version);
        if let Some(found) = lock(&self.compiled).get(&key) {
            return Ok(found.clone());
        }
        let registry = self.registry(&format!("version {version} of subject `{subject}`"))?;
        let registered = registry.version(subject, version).await?;
        lock(&self.ids).insert(key.clone(), registered.id);
        let compiled = Arc::new(match like {
            Some(like) => like.compile_like(&registered.schema)?,
            None => CompiledSchema::compile(&registered.schema)?,
        });
        lock(&self.compiled).insert(key, compiled.clone());
        Ok(compiled)
    }

    /// The global id of version `version` of `subject`.
    pub async fn id(&self, subject: &str, version: u32) -> Result<u32, SchemaError> {
        let key = (subject.to_owned(), version);
        if let Some(id) = lock(&self.ids).get(&key) {
            return Ok(*id);
        }
        let registry = self.registry(&format!("version {version} of subject `{subject}`"))?;
        let id = registry.version(subject, version).await?.id;
        lock(&self.ids).insert(key, id);
        Ok(id)
    }

    /// The compatibility mode in force for `subject`.
    pub async fn compatibility(&self, subject: &str) -> Result<CompatibilityMode, SchemaError> {
        if let Some(mode) = lock(&self.modes).get(subject) {
            return Ok(*mode);
        }
        let registry = self.registry(&format!("the compatibility mode of subject `{subject}`"))?;
        let mode = registry.compatibility(subject).await?;
        lock(&self.modes).insert(subject.to_owned(), mode);
        Ok(mode)
    }
}
