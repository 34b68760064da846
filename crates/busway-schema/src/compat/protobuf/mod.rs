//! Protobuf compatibility: whether the binary encoding written with one `.proto` file decodes
//! correctly with another.
//!
//! A schema is one `.proto` file (proto2 or proto3), compiled with `protox`; it may import the
//! well-known types (`google/protobuf/*.proto`) and nothing else. The rules are about the
//! **binary wire format**, which is what busway's Protobuf codec and the Confluent serializers
//! put on the wire. They are close to the `WIRE` category of buf's breaking-change rules and to
//! Confluent's Protobuf checks; where those two disagree, or where we decide otherwise, the
//! choice is stated below (buf compares the names of message types used by fields, we compare
//! their structure, since names are not on the wire; buf rejects any move into or out of a
//! oneof, we reject only the moves that can lose data, much as Confluent does). The ProtoJSON
//! encoding (which carries field and enum value *names*) is out of scope, so renames that only
//! matter there are not reported.
//!
//! # Reading (`can_read(reader, writer)`)
//!
//! - **Messages** are matched by full name. Every top-level message of the writer must exist in
//!   the reader: any of them can be the payload of an event (Confluent's wire format and
//!   busway's codec select the payload message from the schema), so removing or renaming a
//!   top-level message is a violation, and so is changing the `package` (every full name
//!   changes; the package change is reported once, and messages are then paired by their names
//!   within the package so the rest of the report stays useful). Nested messages and enums are
//!   reached only through the fields that use them and compared by structure, since type names
//!   do not travel on the wire: a nested type the writer has and the reader lacks is fine as
//!   long as no field both sides share refers to it.
//! - **Fields** are matched by number. A writer field the reader does not declare is skipped
//!   by the reader (kept as an unknown field): fine. A reader field the writer does not
//!   declare reads as its default: fine, unless it is a proto2 `required` field. A field whose
//!   name changed but number did not is fine (names are not on the wire).
//! - **Types** of a field present on both sides must be wire compatible:
//!   - `int32`, `uint32`, `int64`, `uint64` and `bool` are interchangeable (all varints; a value
//!     that does not fit the reader's type is truncated as in a C++ cast, which protobuf
//!     documents as the defined behaviour);
//!   - `sint32` and `sint64` are interchangeable (zigzag varints), as are `fixed32` and
//!     `sfixed32`, and `fixed64` and `sfixed64`;
//!   - `string` written, `bytes` read is fine; `bytes` written, `string` read is a violation,
//!     because the writer may send bytes that are not valid UTF-8, which a proto3 reader
//!     rejects and other readers mangle;
//!   - an enum written, `int32`/`uint32`/`int64`/`uint64` read is fine (enums are varints). The
//!     reverse, and an enum read as another enum, is fine when the reader's enum is *open*
//!     (proto3: unknown numbers are kept as numbers); with a *closed* proto2 enum, every number
//!     the writer may send must be a value of the reader's enum (an unknown number is moved to
//!     the unknown fields and the field reads as unset), so an integer written or a writer
//!     enum value the reader lacks is a violation;
//!   - a message read as a message is compared recursively (recursive types terminate);
//!     a proto2 `group` only matches a `group` (its wire encoding differs from a message's);
//!   - a message read as `bytes` or `string`, or the reverse, is a violation although both are
//!     length-delimited on the wire: the reader would get the raw encoding of a message as
//!     opaque data, or try to decode arbitrary bytes as a message. Nothing useful survives;
//!   - `float` and `double` match only themselves; every other change is a violation.
//! - **Cardinality**: a singular field read as `repeated` is fine for every type (repeated
//!   numeric fields accept unpacked elements, and a length-delimited value is one element).
//!   A `repeated` field read as singular is a violation for every type: a singular reader
//!   keeps only the last element of a scalar (and does not understand the packed encoding
//!   proto3 uses by default) and merges all elements of a message. Maps are repeated entry
//!   messages and follow the same rules, their entries compared by structure. proto3
//!   `optional` is not a cardinality change (it adds presence, not a wire difference).
//! - **proto2 `required`**: a reader field that is `required` must be `required` in the
//!   writer too; otherwise the writer may omit it and the reader rejects the message. This
//!   makes adding a required field backward incompatible and removing one (or relaxing it to
//!   optional) forward incompatible.
//! - **oneof**: two fields the writer may set together (they are not members of one writer
//!   `oneof`) must not be members of one reader `oneof`: the reader would keep only the last
//!   one it reads. Moving a single field into a new oneof is fine; moving a field into an
//!   existing oneof, or several fields into one, is a violation. Moving fields out of a oneof
//!   is fine. proto3 `optional` fields' synthetic oneofs are not oneofs here.
//!
//! # History (`evolution(candidate, earlier)`)
//!
//! Some breaks only show when a *later* version reuses what this one removed. Like buf's
//! `FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED` and `ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED`
//! (and unlike Confluent's checker, which accepts any removal), a candidate that removes a field
//! or an enum value of an earlier version must `reserve` its number; otherwise it is a
//! violation whatever the direction, because nothing would stop a later version from reusing
//! the number with another type and misreading data written with the earlier one. These rules
//! apply under every mode but `NONE`, against the same versions the mode checks. Dropping an
//! existing `reserved` entry is not a violation by itself; a later reuse of the number with an
//! incompatible type is caught against the version that still had the old field, which a
//! non-transitive mode does not look at: prefer the transitive modes for Protobuf subjects.
//!
//! Violations are reported at paths made of the top-level message's name and field names,
//! e.g. `Order.customer.email`.

mod checker;
mod compile;
mod descriptors;
#[cfg(test)]
mod tests;

use super::Incompatibility;
use crate::error::SchemaError;
use crate::schema::Schema;
use checker::Checker;
use compile::compile;
use descriptors::{all_enums, all_messages, relative_name};

/// Whether data written with `writer` can be read with `reader`.
pub(super) fn can_read(
    reader: &Schema,
    writer: &Schema,
) -> Result<Vec<Incompatibility>, SchemaError> {
    let reader = compile(reader)?;
    let writer = compile(writer)?;
    let mut checker = Checker::default();
    checker.check_files(&writer, &reader);
    Ok(checker.found)
}

/// Rules that look at what `candidate` removed from `earlier`: removed field numbers and enum
/// value numbers must be reserved.
pub(super) fn evolution(
    candidate: &Schema,
    earlier: &Schema,
) -> Result<Vec<Incompatibility>, SchemaError> {
    let candidate = compile(candidate)?;
    let earlier = compile(earlier)?;
    let mut found = Vec::new();
    let candidate_package = candidate.package_name().to_owned();
    let earlier_package = earlier.package_name().to_owned();
    // Pair types by their name within the package, so a package change (reported by
    // `can_read`) does not hide removals.
    let in_candidate = |full_name: &str| {
        let relative = relative_name(full_name, &earlier_package);
        if candidate_package.is_empty() {
            relative.to_owned()
        } else {
            format!("{candidate_package}.{relative}")
        }
    };
    let pool = candidate.parent_pool();
    for old in all_messages(&earlier) {
        let Some(new) = pool.get_message_by_name(&in_candidate(old.full_name())) else {
            continue;
        };
        if new.is_map_entry() {
            continue;
        }
        let path = relative_name(old.full_name(), &earlier_package);
        for field in old.fields() {
            let number = field.number();
            if new.get_field(number).is_none()
                && !new.reserved_ranges().any(|range| range.contains(&number))
            {
                found.push(Incompatibility::new(
                    format!("{path}.{}", field.name()),
                    format!(
                        "field `{}` (number {number}) was removed without `reserved {number};`: \
                         a later version could reuse the number with another type and misread \
                         data written with this one",
                        field.name()
                    ),
                ));
            }
        }
    }
    for old in all_enums(&earlier) {
        let Some(new) = pool.get_enum_by_name(&in_candidate(old.full_name())) else {
            continue;
        };
        let path = relative_name(old.full_name(), &earlier_package);
        for value in old.values() {
            let number = value.number();
            if new.get_value(number).is_none()
                && !new.reserved_ranges().any(|range| range.contains(&number))
            {
                found.push(Incompatibility::new(
                    format!("{path}.{}", value.name()),
                    format!(
                        "enum value `{}` (number {number}) was removed without `reserved {number};`: \
                         a later version could reuse the number with another meaning",
                        value.name()
                    ),
                ));
            }
        }
    }
    Ok(found)
}
