//! Schema compatibility: whether data written with one schema can be read with another, and what a
//! subject's [`CompatibilityMode`] demands of a new schema.
//!
//! Each format has its own rules, in its own module; they all answer one question,
//! [`can_read`]`(reader, writer)`, and [`check`] turns a mode into the right set of those questions.
//!
//! - **Avro** follows the schema resolution rules of the Avro specification: promotions,
//!   defaults for fields the writer lacks, reader aliases for records, enums and fields, enum
//!   defaults, unions branch by branch.
//! - **JSON Schema** asks whether every instance valid under the writer's schema is valid under
//!   the reader's, and proves it structurally: content models (open, closed, partially open),
//!   `required`, types (`integer` widens to `number`), `enum`/`const`, constraint tightening,
//!   `$ref`, composition. What cannot be proven (say, two different regular expressions) is a
//!   violation whose message starts with `cannot prove`, never a silent pass.
//! - **Protobuf** compares binary wire compatibility field number by field number: wire-
//!   compatible scalar groups, `string`/`bytes`, open and closed enums, cardinality, proto2
//!   `required`, oneofs, removed top-level messages and package changes. On top of the
//!   reader/writer question, a Protobuf candidate that removes a field or enum value must
//!   `reserve` its number (checked under every mode but `NONE`), so that no later version can
//!   reuse it.
//!
//! Each format module documents its rule set in full; the documentation of [`can_read`]
//! summarises the common contract.

mod avro;
mod json_schema;
mod protobuf;

use std::fmt;

use crate::error::SchemaError;
use crate::schema::{CompatibilityMode, Schema};

/// Which way data flows in a failed check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The new schema reading data written with an earlier one.
    Backward,
    /// An earlier schema reading data written with the new one.
    Forward,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Backward => "backward",
            Self::Forward => "forward",
        })
    }
}

/// One rule a schema change breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatibility {
    /// Where: a field path such as `OrderPlaced.amount` (empty for the whole schema).
    pub path: String,
    /// What breaks, in words.
    pub message: String,
    /// The earlier version it was checked against, when known.
    pub version: Option<u32>,
    /// The direction that fails, when the check came from a mode.
    pub direction: Option<Direction>,
}

impl Incompatibility {
    /// A violation at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            version: None,
            direction: None,
        }
    }
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(direction) = self.direction {
            write!(f, "{direction} ")?;
        }
        if let Some(version) = self.version {
            write!(f, "against version {version}")?;
        }
        if self.direction.is_some() || self.version.is_some() {
            f.write_str(": ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The outcome of checking a candidate schema against a subject's history under a mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompatibilityReport {
    /// The mode checked.
    pub mode: CompatibilityMode,
    /// Every violation; empty means compatible.
    pub violations: Vec<Incompatibility>,
}

impl CompatibilityReport {
    /// Whether the candidate may be registered.
    pub fn is_compatible(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Whether data written with `writer` can be read with `reader`; the violations, if not.
///
/// A change of format is always a violation. An invalid schema on either side is
/// [`SchemaError::InvalidSchema`].
///
/// ```
/// use busway_schema::{compat, Schema};
///
/// let old = Schema::protobuf(r#"syntax = "proto3"; message Order { int32 qty = 1; }"#);
/// // Renamed and widened within the varint group: the new reader decodes the old bytes.
/// let new = Schema::protobuf(r#"syntax = "proto3"; message Order { int64 quantity = 1; }"#);
/// assert!(compat::can_read(&new, &old)?.is_empty());
/// // A string cannot read a varint.
/// let bad = Schema::protobuf(r#"syntax = "proto3"; message Order { string qty = 1; }"#);
/// let violations = compat::can_read(&bad, &old)?;
/// assert_eq!(violations.len(), 1);
/// assert_eq!(violations[0].path, "Order.qty");
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
pub fn can_read(reader: &Schema, writer: &Schema) -> Result<Vec<Incompatibility>, SchemaError> {
    if reader.format() != writer.format() {
        return Ok(vec![Incompatibility::new(
            "",
            format!(
                "format changed from {} to {}",
                writer.format(),
                reader.format()
            ),
        )]);
    }
    match reader.format() {
        crate::SchemaFormat::Avro => avro::can_read(reader, writer),
        crate::SchemaFormat::Json => json_schema::can_read(reader, writer),
        crate::SchemaFormat::Protobuf => protobuf::can_read(reader, writer),
    }
}

/// Checks `candidate` against `history` (a subject's earlier schemas as `(version, schema)`,
/// oldest first) under `mode`.
///
/// Non-transitive modes check the latest version only; transitive modes check every version.
/// Backward modes ask whether `candidate` reads the earlier data, forward modes whether the
/// earlier schemas read `candidate`'s data; each violation records the direction and version
/// it failed for. Rules about what `candidate` removed (Protobuf's reserved numbers) carry a
/// version but no direction.
///
/// ```
/// use busway_schema::{compat, CompatibilityMode, Schema};
///
/// let v1 = Schema::avro(r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#);
/// // Adding a field with a default is backward compatible ...
/// let v2 = Schema::avro(r#"{"type":"record","name":"Order","fields":[
///     {"name":"id","type":"long"},{"name":"note","type":"string","default":""}]}"#);
/// assert!(compat::check(CompatibilityMode::Backward, &v2, &[(1, v1.clone())])?.is_compatible());
/// // ... adding one without a default is not.
/// let v2 = Schema::avro(r#"{"type":"record","name":"Order","fields":[
///     {"name":"id","type":"long"},{"name":"note","type":"string"}]}"#);
/// assert!(!compat::check(CompatibilityMode::Backward, &v2, &[(1, v1)])?.is_compatible());
///
/// // JSON Schema: a closed object (`additionalProperties: false`) may gain an optional property:
/// // its old writers never send it ...
/// let j1 = Schema::json(r#"{"type":"object","properties":{"id":{"type":"integer"}},
///     "additionalProperties":false}"#);
/// let j2 = Schema::json(r#"{"type":"object","properties":{"id":{"type":"integer"},
///     "note":{"type":"string"}},"additionalProperties":false}"#);
/// assert!(compat::check(CompatibilityMode::Backward, &j2, &[(1, j1.clone())])?.is_compatible());
/// // ... but its old readers reject it, so the change is not forward (nor fully) compatible.
/// let report = compat::check(CompatibilityMode::Full, &j2, &[(1, j1)])?;
/// assert_eq!(report.violations.len(), 1);
/// assert_eq!(report.violations[0].path, "note");
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
pub fn check(
    mode: CompatibilityMode,
    candidate: &Schema,
    history: &[(u32, Schema)],
) -> Result<CompatibilityReport, SchemaError> {
    let against: &[(u32, Schema)] = if mode.is_transitive() {
        history
    } else {
        history.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    let mut violations = Vec::new();
    for (version, earlier) in against {
        let mut push = |found: Vec<Incompatibility>, direction| {
            violations.extend(found.into_iter().map(|mut v| {
                v.version = Some(*version);
                v.direction = direction;
                v
            }));
        };
        if mode.checks_backward() {
            push(can_read(candidate, earlier)?, Some(Direction::Backward));
        }
        if mode.checks_forward() {
            push(can_read(earlier, candidate)?, Some(Direction::Forward));
        }
        if mode != CompatibilityMode::None {
            push(evolution(candidate, earlier)?, None);
        }
    }
    Ok(CompatibilityReport { mode, violations })
}

/// Rules about what `candidate` removed from `earlier` that hold whatever the direction,
/// because they protect versions still to come (see each format's module).
fn evolution(candidate: &Schema, earlier: &Schema) -> Result<Vec<Incompatibility>, SchemaError> {
    match (candidate.format(), earlier.format()) {
        (crate::SchemaFormat::Protobuf, crate::SchemaFormat::Protobuf) => {
            protobuf::evolution(candidate, earlier)
        }
        _ => Ok(Vec::new()),
    }
}

/// For users' tests: fails with every violation when `candidate` may not follow `history` under
/// `mode`.
///
/// ```
/// use busway_schema::{compat, CompatibilityMode, Schema};
///
/// // An open object (no `additionalProperties`) may drop a property: its new readers accept
/// // whatever old writers put there.
/// let v1 = Schema::json(r#"{"type":"object","properties":{"id":{"type":"integer"},"note":{"type":"string"}},"required":["id"]}"#);
/// let v2 = Schema::json(r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#);
/// compat::assert_compatible(CompatibilityMode::Backward, &v2, &[(1, v1.clone())])?;
/// // Old readers expect `note` to be a string, which new writers no longer promise.
/// assert!(compat::assert_compatible(CompatibilityMode::Forward, &v2, &[(1, v1)]).is_err());
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
pub fn assert_compatible(
    mode: CompatibilityMode,
    candidate: &Schema,
    history: &[(u32, Schema)],
) -> Result<(), SchemaError> {
    let report = check(mode, candidate, history)?;
    if report.is_compatible() {
        Ok(())
    } else {
        Err(SchemaError::Incompatible {
            subject: String::new(),
            mode,
            violations: report.violations,
        })
    }
}
