//! Avro compatibility: the schema resolution rules of the Avro specification.
//!
//! Data written with a writer schema `W` can be read with a reader schema `R` when the
//! specification's resolution of `W` against `R` cannot fail for any datum `W` can produce. The
//! check walks both schemas together and applies these rules:
//!
//! - **Primitives** match when they are the same type, or when the writer's type promotes to the
//!   reader's: `int` to `long`, `float` or `double`; `long` to `float` or `double`; `float` to
//!   `double`; `string` to `bytes` and `bytes` to `string`. Nothing else converts (`long` to
//!   `int` or `double` to `float` is a violation).
//! - **Records** match when their unqualified names are equal (the specification compares
//!   unqualified names, so moving a record to another namespace is compatible), or when one of
//!   the reader record's `aliases` names the writer record. Fields are matched by name, then by
//!   the reader field's `aliases` (writer-side aliases are not used, as the specification says
//!   aliases rewrite the writer's schema from the reader's). For every reader field:
//!   - found in the writer: the two field types must resolve, recursively;
//!   - not found: the reader field needs a `default`, otherwise it is a violation.
//!
//!   Writer fields the reader does not know are skipped, never a violation.
//! - **Enums** match by unqualified name or reader alias. Every symbol the writer may write must
//!   exist in the reader enum, unless the reader enum declares a `default` symbol, which then
//!   stands in for unknown symbols.
//! - **Fixed** types match by unqualified name (or reader alias) and must have the same `size`.
//! - **Arrays** match when their item types resolve; **maps** when their value types resolve.
//! - **Unions**: when both are unions, every branch of the writer's union must match a branch of
//!   the reader's union (the reader branch of the same type is preferred, then the first branch
//!   the writer's type promotes to) and resolve against it. When only the writer is a union,
//!   every branch must resolve against the reader's schema; when only the reader is a union, the
//!   writer's schema must match one of its branches. A union branch that only *some* data would
//!   take is still a violation: a compatibility verdict covers every datum the writer may write.
//! - **Named type references** are followed to their definition (by full name or alias), so a
//!   type used by name in one schema and defined inline in the other is compared by content.
//!   Recursive records are compared once per (writer, reader) pair, so recursion terminates.
//! - **Logical types** resolve through their underlying types, as the specification defines
//!   resolution on Avro types. The one exception, also from the specification, is `decimal`:
//!   two decimals match only with the same `precision` and `scale`. A change between logical
//!   types sharing an underlying type (say `timestamp-millis` to `timestamp-micros`) is accepted
//!   by these rules even though it changes what the numbers mean; review such changes by hand.
//!
//! Violations name the place where resolution fails: the top-level type's name, then field
//! names, `[]` for array items and `{}` for map values, e.g. `Order.lines[].amount`.
//!
//! apache-avro's own `SchemaCompatibility` is not used for the verdict: it compares record
//! names without the reader's aliases, answers "partially compatible" for unions and enums
//! that only some data can traverse (a verdict over every datum must call that a violation),
//! and does not follow a named reference to a definition given in the other schema. The tests
//! check that both agree wherever those differences do not arise.

mod checker;
mod shape;
#[cfg(test)]
mod tests;

use apache_avro::Schema as AvroSchema;

use super::Incompatibility;
use crate::error::SchemaError;
use crate::schema::{Schema, SchemaFormat};
use checker::Checker;

/// Whether data written with `writer` can be read with `reader`.
pub(super) fn can_read(
    reader: &Schema,
    writer: &Schema,
) -> Result<Vec<Incompatibility>, SchemaError> {
    let reader = parse(reader)?;
    let writer = parse(writer)?;
    Ok(Checker::new(&writer, &reader).run(&writer, &reader))
}

/// Parses an Avro schema definition.
fn parse(schema: &Schema) -> Result<AvroSchema, SchemaError> {
    AvroSchema::parse_str(schema.definition()).map_err(|e| SchemaError::InvalidSchema {
        format: SchemaFormat::Avro,
        reason: e.to_string(),
    })
}
