//! JSON Schema compatibility: does the reader's schema accept every instance the writer's
//! schema accepts?
//!
//! JSON has no resolution step between writer and reader: a consumer validates the very document
//! the producer wrote. So "data written with `W` can be read with `R`" means exactly: **every
//! instance valid under `W` is valid under `R`** (the reader accepts everything the writer may
//! produce). The check proves that inclusion structurally. Where a proof is out of reach (say,
//! two different regular expressions) it reports a violation whose message starts with
//! `cannot prove`, rather than accepting the change silently: a verdict of "compatible" is
//! always backed by a proof.
//!
//! Both documents must be valid JSON Schema: they are validated against their draft's
//! meta-schema (`$schema` selects draft 4, 6, 7, 2019-09 or 2020-12; none means 2020-12), every
//! `$ref` into the document must resolve and every regular expression must compile; otherwise
//! the result is [`SchemaError::InvalidSchema`]. References to other documents are not
//! fetched: a reader schema that needs one cannot be proven to accept anything (`cannot
//! prove`); a writer schema's external reference is ignored, which only makes the writer's set
//! of instances larger, so the verdict stays safe.
//!
//! # Rules
//!
//! Each rule below is a consequence of inclusion; `W` is the writer's schema, `R` the reader's.
//!
//! - **Booleans**: a `false` writer (nothing valid) fits any reader; a `true` (or empty) reader
//!   accepts any writer. A `true` writer fits only a reader that accepts everything.
//! - **Types**: every type `W` allows must be allowed by `R`; `integer` is a subset of `number`,
//!   so `integer` to `number` widening is compatible and `number` to `integer` is not (unless
//!   `W` has an integral `multipleOf`). Type arrays are sets. A writer without `type` allows
//!   every type, so a reader with `type` rejects some of its instances. Keywords that apply to
//!   one type (`minLength`, `minimum`, `properties`, `items`, ...) are compared only when `W`
//!   allows that type.
//! - **`enum` and `const`**: a reader `enum`/`const` accepts only its values, so `W` must be
//!   limited to them: adding enum values is fine for the reader, removing them is a violation,
//!   and a writer without `enum`/`const` is a violation. When `W` is limited to a finite set of
//!   values (an `enum`, a `const`, or `type` `boolean`/`null`), each value is simply validated
//!   against `R`: that verdict is exact.
//! - **Objects and content models**: for every property name either side declares, the
//!   schema `W` applies to that property (from `properties`, matching `patternProperties`, else
//!   `additionalProperties`) must be included in the one `R` applies, recursively. For names
//!   neither side declares, `W`'s `additionalProperties` (and `patternProperties`) must be
//!   included in `R`'s. Consequences:
//!   - **open** content model (no `additionalProperties`, or `true`): the writer may send any
//!     other property with any value. So a reader that *adds* a property with a type rejects
//!     some old data (adding a property is backward incompatible), and removing a property
//!     from an open reader is fine;
//!   - **closed** model (`additionalProperties: false`): the writer sends no undeclared
//!     property, so the reader may add optional properties (backward compatible); a closed
//!     reader rejects every property it does not declare, so a writer that adds or keeps a
//!     property the reader dropped is a violation;
//!   - **partially open** (`additionalProperties` with a schema): other properties are
//!     compared through that schema, which lets a reader add a property of that type without
//!     breaking either direction;
//!   - `unevaluatedProperties` is treated as `additionalProperties` over every property the
//!     schema evaluates: its own `properties`/`patternProperties` and those of its `allOf`
//!     and `$ref` subschemas (for the writer also of `anyOf`/`oneOf`/`if`/`then`/`else`,
//!     which can only make the writer's set larger: safe);
//!   - `required`: every name `R` requires, `W` must require. Adding a required property is a
//!     violation for new readers of old data; making one optional is fine for them;
//!   - `propertyNames`, `minProperties`/`maxProperties` and
//!     `dependentRequired`/`dependentSchemas` (`dependencies` before 2019-09) may only be
//!     *looser* in `R`.
//! - **Arrays**: items are compared position by position (`prefixItems`, or `items` as an
//!   array before 2020-12) and then the rest (`items`, `additionalItems`,
//!   `unevaluatedItems`); `minItems`, `maxItems` and `uniqueItems` may only be looser in `R`;
//!   a reader `contains` needs the same `contains` in `W` with at least as tight
//!   `minContains`/`maxContains`.
//! - **Strings and numbers**: *tightening* on the reader side is a violation, loosening is
//!   fine: `minLength`, `minimum`, `exclusiveMinimum` may not grow, `maxLength`, `maximum`,
//!   `exclusiveMaximum` may not shrink (an integer-only writer's bounds are rounded to the
//!   integers they admit); a reader `multipleOf` needs a writer `multipleOf` it divides. A
//!   reader `pattern` needs the very same `pattern` in `W` (a different one is `cannot prove`;
//!   none at all is a violation). A reader `format` needs the same `format` in `W`: some
//!   validators assert formats, so adding or changing one is treated as tightening.
//! - **`$ref`** to `#`, to JSON pointers (`#/$defs/...`, `#/definitions/...`) and to anchors
//!   in the same document are followed; recursive schemas are compared coinductively: a pair
//!   already under comparison is assumed included once the comparison has gone down into a
//!   property or an item, which is sound because instances are finite (a reference that loops
//!   back without going down is `cannot prove`). Before 2019-09 the keywords beside a `$ref`
//!   are ignored, as those drafts say.
//! - **Composition**: `allOf` in `R`: `W` must be included in every subschema. `anyOf`/`oneOf`
//!   in `W`: every branch (with `W`'s other keywords) must be included in `R`. `allOf` in `W`
//!   is merged into one schema (or one of its subschemas alone must be included). `anyOf` in
//!   `R`: `W` must be included in one branch. `oneOf` in `R`: `W` must be included in one
//!   branch and provably disjoint from the others (different types, `const`/`enum` values, or
//!   a required property with disjoint schemas). `not` in `R`: `W` must be provably disjoint
//!   from it. `if`/`then`/`else` in `R`: if `W` is included in `if`, it must be included in
//!   `then`; if it is disjoint from `if`, in `else`; otherwise in both. When none of these
//!   proofs succeeds, the violation says `cannot prove`. `not` and `if` in `W` are ignored
//!   (the writer's set only grows, so the verdict stays safe).
//! - Annotations (`title`, `description`, `default`, `examples`, `deprecated`, `readOnly`,
//!   `writeOnly`, `$comment`, `contentEncoding`, `contentMediaType`, `contentSchema`) and
//!   keywords unknown to the draft are ignored, as validators ignore them.
//!
//! There are no aliases in JSON Schema: a renamed property is a removed property plus an added
//! one, and is incompatible in both directions under a closed model and at least one under an
//! open model. Violations are reported at property paths: `customer.address.zip`, `lines[]`
//! for array items, `pair[0]` for tuple positions and `*` for undeclared properties.

mod arrays;
mod combinators;
mod constraints;
mod document;
mod flatten;
mod keywords;
mod objects;
#[cfg(test)]
mod tests;
mod types;
mod values;

use std::collections::HashMap;

use crate::compat::Incompatibility;
use crate::error::SchemaError;
use crate::schema::Schema;
use document::{Doc, Draft};

/// Whether data written with `writer` can be read with `reader`.
pub(super) fn can_read(
    reader: &Schema,
    writer: &Schema,
) -> Result<Vec<Incompatibility>, SchemaError> {
    let reader_doc = Doc::parse(reader)?;
    let writer_doc = Doc::parse(writer)?;
    let mut cx = Cx::new(&writer_doc, &reader_doc);
    let found = cx.sub(&writer_doc.root, &reader_doc.root, "");
    Ok(found)
}

/// How deep the comparison may nest before it gives up with "cannot prove".
const MAX_DEPTH: usize = 128;

/// Prefix of violations that are not proven breaks, only unproven inclusions.
const CANNOT_PROVE: &str = "cannot prove compatibility:";

/// Which document a subschema belongs to (references resolve there).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Side {
    Writer,
    Reader,
}

/// The comparison: both documents, caches, and the pairs under comparison.
struct Cx<'a> {
    writer: &'a Doc,
    reader: &'a Doc,
    /// Pairs (writer, reader) being compared, for recursion through `$ref`, with the instance
    /// nesting at which their comparison started.
    in_progress: HashMap<(String, String), usize>,
    /// How many properties/items deep into the instance the comparison is.
    nesting: usize,
    depth: usize,
    validators: HashMap<(Draft, String), Option<jsonschema::Validator>>,
}

fn cannot(path: impl Into<String>, message: impl Into<String>) -> Incompatibility {
    let message = message.into();
    if message.starts_with(CANNOT_PROVE) {
        Incompatibility::new(path, message)
    } else {
        Incompatibility::new(path, format!("{CANNOT_PROVE} {message}"))
    }
}

impl<'a> Cx<'a> {
    fn new(writer: &'a Doc, reader: &'a Doc) -> Self {
        Self {
            writer,
            reader,
            in_progress: HashMap::new(),
            nesting: 0,
            depth: 0,
            validators: HashMap::new(),
        }
    }

    fn doc(&self, side: Side) -> &'a Doc {
        match side {
            Side::Writer => self.writer,
            Side::Reader => self.reader,
        }
    }
}
