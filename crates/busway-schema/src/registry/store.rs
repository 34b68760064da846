//! The state the in-memory and the file-backed registries share, and the registration rules
//! both follow: normalisation, the compatibility check, ids and version numbers.

use std::collections::{BTreeMap, HashMap};

use crate::compat::{self, CompatibilityReport};
use crate::error::SchemaError;
use crate::schema::{CompatibilityMode, RegisteredSchema, Schema, SchemaFormat};

/// The normalised form two schemas are compared by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SchemaKey {
    format: SchemaFormat,
    canonical: Vec<u8>,
}

/// Parses `schema` (an invalid one is [`SchemaError::InvalidSchema`]) and returns its normalised
/// form.
pub(crate) fn normalise(schema: &Schema) -> Result<SchemaKey, SchemaError> {
    let format = schema.format();
    let invalid = |reason: String| SchemaError::InvalidSchema { format, reason };
    let canonical = match format {
        SchemaFormat::Avro => {
            let value: serde_json::Value = serde_json::from_str(schema.definition())
                .map_err(|e| invalid(format!("not JSON: {e}")))?;
            apache_avro::Schema::parse(&value).map_err(|e| invalid(e.to_string()))?;
            canonical_json(&value)
        }
        SchemaFormat::Json => {
            let value: serde_json::Value = serde_json::from_str(schema.definition())
                .map_err(|e| invalid(format!("not JSON: {e}")))?;
            // Only objects and booleans are schemas; the meta-schema check below would also
            // refuse the rest, but with a less helpful message.
            if !(value.is_object() || value.is_boolean()) {
                return Err(invalid("a JSON Schema is an object or a boolean".into()));
            }
            jsonschema::meta::validate(&value).map_err(|e| invalid(e.to_string()))?;
            canonical_json(&value)
        }
        SchemaFormat::Protobuf => compile_proto(schema.definition()).map_err(invalid)?,
    };
    Ok(SchemaKey { format, canonical })
}

/// JSON with object keys sorted and no whitespace, whatever serde_json's map ordering feature.
fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    sorted(value).to_string().into_bytes()
}

/// The name a registered `.proto` source is compiled under.
const PROTO_FILE_NAME: &str = "schema.proto";

/// Compiles a `.proto` source (imports of Google's well-known types allowed) into its encoded
/// descriptor, without source locations, so that whitespace and comments do not count.
fn compile_proto(source: &str) -> Result<Vec<u8>, String> {
    use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

    struct Single(String);
    impl FileResolver for Single {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            if name == PROTO_FILE_NAME {
                File::from_source(name, &self.0)
            } else {
                Err(protox::Error::file_not_found(name))
            }
        }
    }

    let mut resolver = ChainFileResolver::new();
    resolver.add(Single(source.to_owned()));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_source_info(false).include_imports(false);
    compiler
        .open_file(PROTO_FILE_NAME)
        .map_err(|e| e.to_string())?;
    Ok(compiler.encode_file_descriptor_set())
}

/// What registering a schema comes to.
pub(crate) enum Plan {
    /// The subject already holds the schema.
    Existing(RegisteredSchema),
    /// A new version, checked and ready to be committed.
    New(NewVersion),
}

/// A registration that passed every check and only needs committing.
pub(crate) struct NewVersion {
    pub(crate) registered: RegisteredSchema,
    key: SchemaKey,
}

/// One version of a subject.
#[derive(Clone, Debug)]
struct VersionEntry {
    version: u32,
    id: u32,
    key: SchemaKey,
}

#[derive(Clone, Debug, Default)]
struct Subject {
    mode: Option<CompatibilityMode>,
    versions: Vec<VersionEntry>,
}

/// The registry's state, shared by the in-memory and the file-backed registries.
#[derive(Debug, Default)]
pub(crate) struct Store {
    default_mode: CompatibilityMode,
    schemas: BTreeMap<u32, Schema>,
    ids: HashMap<SchemaKey, u32>,
    subjects: BTreeMap<String, Subject>,
}

/// Refuses the empty subject, which no registry can address.
fn check_subject(subject: &str) -> Result<(), SchemaError> {
    if subject.is_empty() {
        return Err(SchemaError::Config {
            field: "subject".into(),
            reason: "a subject name cannot be empty".into(),
        });
    }
    Ok(())
}

impl Store {
    pub(crate) fn new(default_mode: CompatibilityMode) -> Self {
        Self {
            default_mode,
            ..Self::default()
        }
    }

    pub(crate) fn default_mode(&self) -> CompatibilityMode {
        self.default_mode
    }

    pub(crate) fn set_default_mode(&mut self, mode: CompatibilityMode) {
        self.default_mode = mode;
    }

    fn subject(&self, subject: &str) -> Result<&Subject, SchemaError> {
        self.subjects
            .get(subject)
            .filter(|s| !s.versions.is_empty())
            .ok_or_else(|| SchemaError::SubjectNotFound(subject.to_owned()))
    }

    fn registered(
        &self,
        subject: &str,
        entry: &VersionEntry,
    ) -> Result<RegisteredSchema, SchemaError> {
        let schema = self
            .schemas
            .get(&entry.id)
            .cloned()
            .ok_or(SchemaError::SchemaNotFound(entry.id))?;
        Ok(RegisteredSchema {
            id: entry.id,
            subject: subject.to_owned(),
            version: entry.version,
            schema,
        })
    }

    fn history(&self, subject: &str) -> Result<Vec<(u32, Schema)>, SchemaError> {
        let Some(s) = self.subjects.get(subject) else {
            return Ok(Vec::new());
        };
        s.versions
            .iter()
            .map(|e| self.registered(subject, e).map(|r| (r.version, r.schema)))
            .collect()
    }

    /// Validates `schema` and decides what registering it under `subject` means, running the
    /// subject's compatibility check for a new version. Changes nothing.
    pub(crate) fn plan_register(&self, subject: &str, schema: Schema) -> Result<Plan, SchemaError> {
        check_subject(subject)?;
        let key = normalise(&schema)?;
        if let Some(s) = self.subjects.get(subject)
            && let Some(entry) = s.versions.iter().find(|e| e.key == key)
        {
            return self.registered(subject, entry).map(Plan::Existing);
        }
        let mode = self.compatibility(subject);
        if mode != CompatibilityMode::None {
            let history = self.history(subject)?;
            let report = compat::check(mode, &schema, &history)?;
            if !report.is_compatible() {
                return Err(SchemaError::Incompatible {
                    subject: subject.to_owned(),
                    mode,
                    violations: report.violations,
                });
            }
        }
        let id = match self.ids.get(&key) {
            Some(id) => *id,
            None => self.next_id()?,
        };
        let version = self
            .subjects
            .get(subject)
            .and_then(|s| s.versions.last())
            .map_or(Ok(1), |e| {
                e.version
                    .checked_add(1)
                    .ok_or_else(|| SchemaError::Registry {
                        status: 0,
                        message: format!("subject `{subject}` has run out of version numbers"),
                    })
            })?;
        Ok(Plan::New(NewVersion {
            registered: RegisteredSchema {
                id,
                subject: subject.to_owned(),
                version,
                schema,
            },
            key,
        }))
    }

    fn next_id(&self) -> Result<u32, SchemaError> {
        match self.schemas.keys().next_back() {
            None => Ok(1),
            Some(last) => last.checked_add(1).ok_or_else(|| SchemaError::Registry {
                status: 0,
                message: "the registry has run out of schema ids".into(),
            }),
        }
    }

    /// Records a planned registration.
    pub(crate) fn commit(&mut self, new: NewVersion) -> RegisteredSchema {
        let NewVersion { registered, key } = new;
        self.schemas
            .entry(registered.id)
            .or_insert_with(|| registered.schema.clone());
        self.ids.insert(key.clone(), registered.id);
        self.subjects
            .entry(registered.subject.clone())
            .or_default()
            .versions
            .push(VersionEntry {
                version: registered.version,
                id: registered.id,
                key,
            });
        registered
    }

    /// Adds a version read back from storage, checking that it agrees with what is loaded already
    /// (versions ascending, one schema per id, one id per schema).
    pub(crate) fn load(
        &mut self,
        subject: &str,
        version: u32,
        id: u32,
        schema: Schema,
    ) -> Result<(), String> {
        check_subject(subject).map_err(|e| e.to_string())?;
        if id == 0 || version == 0 {
            return Err("ids and versions start at 1".into());
        }
        let key = normalise(&schema).map_err(|e| e.to_string())?;
        if let Some(known) = self.ids.get(&key)
            && *known != id
        {
            return Err(format!("the same schema has ids {known} and {id}"));
        }
        if let Some(existing) = self.schemas.get(&id)
            && normalise(existing).ok().as_ref() != Some(&key)
        {
            return Err(format!("id {id} names two different schemas"));
        }
        let entry = self.subjects.entry(subject.to_owned()).or_default();
        if let Some(last) = entry.versions.last()
            && last.version >= version
        {
            return Err(format!(
                "version {version} listed after version {}",
                last.version
            ));
        }
        if entry.versions.iter().any(|e| e.key == key) {
            return Err(format!("version {version} repeats an earlier version"));
        }
        entry.versions.push(VersionEntry {
            version,
            id,
            key: key.clone(),
        });
        self.schemas.entry(id).or_insert(schema);
        self.ids.insert(key, id);
        Ok(())
    }

    /// The subject's own mode, if it has one.
    pub(crate) fn own_mode(&self, subject: &str) -> Option<CompatibilityMode> {
        self.subjects.get(subject).and_then(|s| s.mode)
    }

    /// `(version, id, format)` of every version of `subject`, ascending.
    pub(crate) fn version_ids(&self, subject: &str) -> Vec<(u32, u32, SchemaFormat)> {
        self.subjects
            .get(subject)
            .map(|s| {
                s.versions
                    .iter()
                    .map(|e| (e.version, e.id, e.key.format))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every subject with a version or a mode of its own, sorted.
    pub(crate) fn known_subjects(&self) -> Vec<String> {
        self.subjects.keys().cloned().collect()
    }

    pub(crate) fn lookup(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<Option<RegisteredSchema>, SchemaError> {
        let key = normalise(schema)?;
        let Some(s) = self.subjects.get(subject) else {
            return Ok(None);
        };
        s.versions
            .iter()
            .find(|e| e.key == key)
            .map(|e| self.registered(subject, e))
            .transpose()
    }

    pub(crate) fn schema_by_id(&self, id: u32) -> Result<Schema, SchemaError> {
        self.schemas
            .get(&id)
            .cloned()
            .ok_or(SchemaError::SchemaNotFound(id))
    }

    pub(crate) fn version(
        &self,
        subject: &str,
        version: u32,
    ) -> Result<RegisteredSchema, SchemaError> {
        let s = self.subject(subject)?;
        let entry = s
            .versions
            .iter()
            .find(|e| e.version == version)
            .ok_or_else(|| SchemaError::VersionNotFound {
                subject: subject.to_owned(),
                version,
            })?;
        self.registered(subject, entry)
    }

    pub(crate) fn latest(&self, subject: &str) -> Result<RegisteredSchema, SchemaError> {
        let s = self.subject(subject)?;
        match s.versions.last() {
            Some(entry) => self.registered(subject, entry),
            None => Err(SchemaError::SubjectNotFound(subject.to_owned())),
        }
    }

    pub(crate) fn versions(&self, subject: &str) -> Result<Vec<u32>, SchemaError> {
        Ok(self
            .subject(subject)?
            .versions
            .iter()
            .map(|e| e.version)
            .collect())
    }

    /// Subjects with at least one version, sorted.
    pub(crate) fn subjects(&self) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, s)| !s.versions.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub(crate) fn compatibility(&self, subject: &str) -> CompatibilityMode {
        self.own_mode(subject).unwrap_or(self.default_mode)
    }

    pub(crate) fn set_compatibility(
        &mut self,
        subject: &str,
        mode: CompatibilityMode,
    ) -> Result<(), SchemaError> {
        check_subject(subject)?;
        self.subjects.entry(subject.to_owned()).or_default().mode = Some(mode);
        Ok(())
    }

    pub(crate) fn check(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<CompatibilityReport, SchemaError> {
        normalise(schema)?;
        let mode = self.compatibility(subject);
        if mode == CompatibilityMode::None {
            return Ok(CompatibilityReport {
                mode,
                violations: Vec::new(),
            });
        }
        compat::check(mode, schema, &self.history(subject)?)
    }
}
