//! Keyword tables and small readers over a schema object, shared by every rule.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Keywords that only annotate; they never make an instance invalid.
pub(super) const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "id",
    "$anchor",
    "$dynamicAnchor",
    "$recursiveAnchor",
    "$comment",
    "$defs",
    "definitions",
    "$vocabulary",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// Keywords whose value is not a subschema: a single value can be checked against them by a
/// validator built from them alone.
pub(super) const VALUE_ASSERTIONS: &[&str] = &[
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "format",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
];

/// Keywords that combine subschemas; `flatten` takes them apart.
pub(super) const COMBINATORS: &[&str] = &[
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
];

pub(super) const ALL_TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "integer", "string",
];

pub(super) fn is_false(schema: &Value) -> bool {
    matches!(schema, Value::Bool(false))
}

/// A schema every instance satisfies: `true`, or an object with nothing but annotations.
pub(super) fn accepts_all(schema: &Value) -> bool {
    match schema {
        Value::Bool(b) => *b,
        Value::Object(map) => map.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

pub(super) fn contains_ref(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(k, v)| {
            k == "$ref" || k == "$dynamicRef" || k == "$recursiveRef" || contains_ref(v)
        }),
        Value::Array(items) => items.iter().any(contains_ref),
        _ => false,
    }
}

pub(super) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// JSON equality with numbers compared by value (`1` and `1.0` are the same instance).
pub(super) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// The types a base allows: `None` when it does not restrict them.
pub(super) fn types(base: &Map<String, Value>) -> Option<BTreeSet<&'static str>> {
    let named = |name: &str| ALL_TYPES.iter().copied().find(|t| *t == name);
    match base.get("type")? {
        Value::String(t) => Some(named(t).into_iter().collect()),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(Value::as_str)
                .filter_map(named)
                .collect(),
        ),
        _ => None,
    }
}

/// Whether a set of types (`None` = all) admits instances of type `t` (`integer` is in
/// `number`).
pub(super) fn admits(set: &Option<BTreeSet<&'static str>>, t: &str) -> bool {
    match set {
        None => true,
        Some(set) => set.contains(t) || (t == "integer" && set.contains("number")),
    }
}

pub(super) fn string_set(base: &Map<String, Value>, key: &str) -> BTreeSet<String> {
    base.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn object<'m>(
    base: &'m Map<String, Value>,
    key: &str,
) -> Option<&'m Map<String, Value>> {
    base.get(key).and_then(Value::as_object)
}
