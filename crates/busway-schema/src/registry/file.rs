//! A schema registry kept as files in a directory: schemas a team commits to git and reviews in
//! pull requests, and that a service can read at runtime from files baked into its image.
//!
//! # Layout
//!
//! ```text
//! <dir>/
//!   registry.json                 {"compatibility": "BACKWARD"}   (optional; the default mode)
//!   subjects/
//!     orders-value/
//!       subject.json              the subject's index: its mode and its versions with their ids
//!       v1.avsc                   version 1, exactly as registered
//!       v2.avsc                   version 2
//!     payments-value/
//!       subject.json
//!       v1.proto
//! ```
//!
//! A subject's `subject.json` lists one version per line, so that a pull request adding a version
//! shows up as one added line next to the new schema file:
//!
//! ```text
//! {
//!   "compatibility": "FULL",
//!   "versions": [
//!     {"version": 1, "id": 1, "schemaType": "AVRO"},
//!     {"version": 2, "id": 3, "schemaType": "AVRO"}
//!   ]
//! }
//! ```
//!
//! `compatibility` is omitted when the subject follows the registry's default (`registry.json`,
//! [`CompatibilityMode::Backward`] when that file is absent). The schema of a version is the file
//! `v<version>.<ext>` next to the index, `<ext>` being the format's extension (`avsc`, `json`,
//! `proto`). Ids are global and recorded in the indexes, never derived from the order in which a
//! file system lists directories, so every checkout of the directory gives the same ids. Opening a
//! directory checks it whole: an id naming two different schemas (two branches that each took the
//! next id, merged) or a schema listed twice under different ids is reported with the file at
//! fault.
//!
//! Registration writes the schema file first and the index last, each to a temporary file renamed
//! over the old one, so a crash leaves either the old or the new index, never a torn one. One
//! process at a time should write to a directory; readers see new versions after
//! [`FileRegistry::reload`].
//!
//! Subject names become directory names, so names that could escape the directory or that are not
//! portable between file systems are refused: empty, `.`/`..`, leading `.`, path separators,
//! `: * ? " < > |`, control characters, a trailing space or dot, Windows device names, and a
//! name differing only in case from an existing subject (they would share a directory on macOS
//! and Windows).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::SchemaRegistry;
use super::store::{Plan, Store};
use crate::compat::CompatibilityReport;
use crate::error::SchemaError;
use crate::schema::{CompatibilityMode, RegisteredSchema, Schema, SchemaFormat};

const REGISTRY_FILE: &str = "registry.json";
const SUBJECTS_DIR: &str = "subjects";
const INDEX_FILE: &str = "subject.json";
/// Longest subject name accepted, in bytes; file systems commonly cap a name at 255.
const MAX_SUBJECT_LEN: usize = 200;

/// A schema registry stored in a directory (see the [module docs](self) for the layout).
///
/// ```
/// use busway_schema::registry::FileRegistry;
/// use busway_schema::{Schema, SchemaRegistry};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let registry = FileRegistry::open(dir.path()).await?;
/// let schema = Schema::avro(r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#);
/// let registered = registry.register("orders-value", schema.clone()).await?;
/// assert!(dir.path().join("subjects/orders-value/v1.avsc").exists());
///
/// // In production, read the same files without being able to change them.
/// let production = FileRegistry::open_read_only(dir.path()).await?;
/// assert_eq!(production.schema_by_id(registered.id).await?, schema);
/// # Ok::<(), busway_schema::SchemaError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct FileRegistry {
    dir: PathBuf,
    read_only: bool,
    store: Mutex<Store>,
}

impl FileRegistry {
    /// Opens the registry in `dir` for reading and registering, creating the directory when it
    /// does not exist.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self, SchemaError> {
        let dir = dir.as_ref().to_path_buf();
        let subjects = dir.join(SUBJECTS_DIR);
        tokio::fs::create_dir_all(&subjects)
            .await
            .map_err(|e| io(&subjects, e))?;
        Self::load(dir, false).await
    }

    /// Opens the registry in `dir` for reading only: registering a new schema or changing a mode
    /// is refused with [`SchemaError::Unsupported`]; registering a schema the subject already
    /// holds still returns its registration. The directory must exist.
    pub async fn open_read_only(dir: impl AsRef<Path>) -> Result<Self, SchemaError> {
        let dir = dir.as_ref().to_path_buf();
        let meta = tokio::fs::metadata(&dir).await.map_err(|e| io(&dir, e))?;
        if !meta.is_dir() {
            return Err(io(
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        Self::load(dir, true).await
    }

    async fn load(dir: PathBuf, read_only: bool) -> Result<Self, SchemaError> {
        let store = read_store(&dir).await?;
        Ok(Self {
            dir,
            read_only,
            store: Mutex::new(store),
        })
    }

    /// Reads the directory again, picking up versions other processes or a `git pull` added.
    pub async fn reload(&self) -> Result<(), SchemaError> {
        let fresh = read_store(&self.dir).await?;
        *self.store.lock().await = fresh;
        Ok(())
    }

    /// The registry's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the registry was opened with [`FileRegistry::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The mode of subjects that have none of their own.
    pub async fn default_mode(&self) -> CompatibilityMode {
        self.store.lock().await.default_mode()
    }

    /// Sets the mode of subjects that have none of their own (written to `registry.json`).
    pub async fn set_default_mode(&self, mode: CompatibilityMode) -> Result<(), SchemaError> {
        self.writable("change the default compatibility mode")?;
        let mut store = self.store.lock().await;
        let text = format!("{{\n  \"compatibility\": \"{}\"\n}}\n", mode.as_str());
        write_atomic(&self.dir.join(REGISTRY_FILE), text.as_bytes()).await?;
        store.set_default_mode(mode);
        Ok(())
    }

    fn writable(&self, what: &str) -> Result<(), SchemaError> {
        if self.read_only {
            return Err(SchemaError::Unsupported(format!(
                "cannot {what}: the file registry at {} was opened read-only; register schemas \
                 in a writable checkout and commit the files",
                self.dir.display()
            )));
        }
        Ok(())
    }

    fn subject_dir(&self, subject: &str) -> PathBuf {
        self.dir.join(SUBJECTS_DIR).join(subject)
    }

    /// Writes `subject`'s index with `versions` and `mode`.
    async fn write_index(
        &self,
        subject: &str,
        mode: Option<CompatibilityMode>,
        versions: &[(u32, u32, SchemaFormat)],
    ) -> Result<(), SchemaError> {
        let dir = self.subject_dir(subject);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io(&dir, e))?;
        write_atomic(
            &dir.join(INDEX_FILE),
            render_index(mode, versions).as_bytes(),
        )
        .await
    }
}

#[async_trait]
impl SchemaRegistry for FileRegistry {
    async fn register(
        &self,
        subject: &str,
        schema: Schema,
    ) -> Result<RegisteredSchema, SchemaError> {
        check_subject_name(subject)?;
        let mut store = self.store.lock().await;
        let new = match store.plan_register(subject, schema)? {
            Plan::Existing(registered) => return Ok(registered),
            Plan::New(new) => new,
        };
        self.writable(&format!("register a new schema under `{subject}`"))?;
        check_case_collision(&store, subject)?;
        let r = &new.registered;
        let file = self.subject_dir(subject).join(format!(
            "v{}.{}",
            r.version,
            r.schema.format().extension()
        ));
        let dir = self.subject_dir(subject);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io(&dir, e))?;
        write_atomic(&file, r.schema.definition().as_bytes()).await?;
        let mut versions = store.version_ids(subject);
        versions.push((r.version, r.id, r.schema.format()));
        self.write_index(subject, store.own_mode(subject), &versions)
            .await?;
        Ok(store.commit(new))
    }

    async fn lookup(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<Option<RegisteredSchema>, SchemaError> {
        self.store.lock().await.lookup(subject, schema)
    }

    async fn schema_by_id(&self, id: u32) -> Result<Schema, SchemaError> {
        self.store.lock().await.schema_by_id(id)
    }

    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, SchemaError> {
        self.store.lock().await.version(subject, version)
    }

    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, SchemaError> {
        self.store.lock().await.latest(subject)
    }

    async fn versions(&self, subject: &str) -> Result<Vec<u32>, SchemaError> {
        self.store.lock().await.versions(subject)
    }

    async fn subjects(&self) -> Result<Vec<String>, SchemaError> {
        Ok(self.store.lock().await.subjects())
    }

    async fn compatibility(&self, subject: &str) -> Result<CompatibilityMode, SchemaError> {
        Ok(self.store.lock().await.compatibility(subject))
    }

    async fn set_compatibility(
        &self,
        subject: &str,
        mode: CompatibilityMode,
    ) -> Result<(), SchemaError> {
        check_subject_name(subject)?;
        self.writable(&format!("change the compatibility mode of `{subject}`"))?;
        let mut store = self.store.lock().await;
        check_case_collision(&store, subject)?;
        self.write_index(subject, Some(mode), &store.version_ids(subject))
            .await?;
        store.set_compatibility(subject, mode)
    }

    async fn check_compatibility(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<CompatibilityReport, SchemaError> {
        self.store.lock().await.check(subject, schema)
    }
}

fn io(path: &Path, source: std::io::Error) -> SchemaError {
    SchemaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A directory's content that is not what this module writes.
fn corrupt(path: &Path, reason: impl Into<String>) -> SchemaError {
    SchemaError::Config {
        field: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Refuses subject names that are not a single, portable directory name (see the module docs).
fn check_subject_name(subject: &str) -> Result<(), SchemaError> {
    let refuse = |reason: &str| {
        Err(SchemaError::Config {
            field: "subject".into(),
            reason: format!("`{subject}` cannot name a subject in a file registry: {reason}"),
        })
    };
    if subject.is_empty() {
        return refuse("it is empty");
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return refuse("it is longer than 200 bytes");
    }
    if subject.starts_with('.') {
        // Also covers `.` and `..`, which would name the directory itself or its parent.
        return refuse("it starts with `.`");
    }
    if let Some(c) = subject.chars().find(|c| {
        matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') || c.is_control()
    }) {
        return refuse(&format!("it contains {c:?}"));
    }
    if subject.ends_with(' ') || subject.ends_with('.') {
        return refuse("it ends with a space or a dot");
    }
    let stem = subject
        .split('.')
        .next()
        .unwrap_or(subject)
        .to_ascii_uppercase();
    let device = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.ends_with(|c: char| c.is_ascii_digit() && c != '0'));
    if device {
        return refuse("it is a reserved device name on Windows");
    }
    Ok(())
}

/// Refuses a new subject whose name differs only in case from an existing one.
fn check_case_collision(store: &Store, subject: &str) -> Result<(), SchemaError> {
    let lower = subject.to_lowercase();
    match store
        .known_subjects()
        .into_iter()
        .find(|s| s != subject && s.to_lowercase() == lower)
    {
        Some(other) => Err(SchemaError::Config {
            field: "subject".into(),
            reason: format!(
                "`{subject}` differs from the existing subject `{other}` only in case; they \
                 would share a directory on case-insensitive file systems"
            ),
        }),
        None => Ok(()),
    }
}

/// A subject's index, one version per line.
fn render_index(mode: Option<CompatibilityMode>, versions: &[(u32, u32, SchemaFormat)]) -> String {
    let mut out = String::from("{\n");
    if let Some(mode) = mode {
        out.push_str(&format!("  \"compatibility\": \"{}\",\n", mode.as_str()));
    }
    if versions.is_empty() {
        out.push_str("  \"versions\": []\n}\n");
        return out;
    }
    out.push_str("  \"versions\": [\n");
    let lines: Vec<String> = versions
        .iter()
        .map(|(version, id, format)| {
            format!(
                "    {{\"version\": {version}, \"id\": {id}, \"schemaType\": \"{}\"}}",
                format.as_str()
            )
        })
        .collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n  ]\n}\n");
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    compatibility: Option<CompatibilityMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    compatibility: Option<CompatibilityMode>,
    #[serde(default)]
    versions: Vec<IndexEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexEntry {
    version: u32,
    id: u32,
    #[serde(rename = "schemaType")]
    schema_type: SchemaFormat,
}

/// Reads a file that may be absent.
async fn read_optional(path: &Path) -> Result<Option<String>, SchemaError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

/// Reads a whole registry directory.
async fn read_store(dir: &Path) -> Result<Store, SchemaError> {
    let registry_file = dir.join(REGISTRY_FILE);
    let default_mode = match read_optional(&registry_file).await? {
        Some(text) => serde_json::from_str::<RegistryFile>(&text)
            .map_err(|e| corrupt(&registry_file, e.to_string()))?
            .compatibility
            .unwrap_or_default(),
        None => CompatibilityMode::default(),
    };
    let mut store = Store::new(default_mode);

    let subjects_dir = dir.join(SUBJECTS_DIR);
    let mut names = Vec::new();
    match tokio::fs::read_dir(&subjects_dir).await {
        Ok(mut entries) => {
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| io(&subjects_dir, e))?
            {
                let path = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    return Err(corrupt(&path, "the directory name is not UTF-8"));
                };
                // Hidden entries are editor and OS droppings (and our temporary files).
                if name.starts_with('.') {
                    continue;
                }
                let file_type = entry.file_type().await.map_err(|e| io(&path, e))?;
                if !file_type.is_dir() {
                    return Err(corrupt(&path, "expected only subject directories here"));
                }
                check_subject_name(&name).map_err(|e| corrupt(&path, e.to_string()))?;
                names.push(name);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&subjects_dir, e)),
    }
    // Sorted so that loading, and any error it reports, does not depend on directory order.
    names.sort();

    for name in names {
        let subject_dir = subjects_dir.join(&name);
        let index_path = subject_dir.join(INDEX_FILE);
        let text = tokio::fs::read_to_string(&index_path)
            .await
            .map_err(|e| io(&index_path, e))?;
        let mut index: IndexFile =
            serde_json::from_str(&text).map_err(|e| corrupt(&index_path, e.to_string()))?;
        index.versions.sort_by_key(|v| v.version);
        for entry in index.versions {
            let file = subject_dir.join(format!(
                "v{}.{}",
                entry.version,
                entry.schema_type.extension()
            ));
            let definition = tokio::fs::read_to_string(&file)
                .await
                .map_err(|e| io(&file, e))?;
            store
                .load(
                    &name,
                    entry.version,
                    entry.id,
                    Schema::new(entry.schema_type, definition),
                )
                .map_err(|reason| corrupt(&file, reason))?;
        }
        if let Some(mode) = index.compatibility {
            store.set_compatibility(&name, mode)?;
        }
    }
    Ok(store)
}

/// Writes `contents` to `path` through a temporary file in the same directory, renamed over
/// `path`, so that readers and crashes see the old file or the new one, never a mix.
async fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), SchemaError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(contents).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if let Err(e) = result {
        // Best effort: the temporary file is hidden and ignored when reading anyway.
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io(path, e));
    }
    Ok(())
}
