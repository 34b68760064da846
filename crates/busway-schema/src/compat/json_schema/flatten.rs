//! Taking a schema apart into conjuncts (`allOf`, `$ref`, composition) and merging them back.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::document::{Draft, Target};
use super::keywords::{
    ALL_TYPES, ANNOTATIONS, COMBINATORS, admits, object, same_value, string_set, types,
};
use super::{Cx, MAX_DEPTH, Side};

/// A schema taken apart into the conjuncts an instance must all satisfy.
#[derive(Default)]
pub(super) struct Flat {
    /// Conjuncts without composition keywords.
    pub(super) bases: Vec<Map<String, Value>>,
    /// `anyOf` (false) and `oneOf` (true) groups.
    pub(super) groups: Vec<(bool, Vec<Value>)>,
    pub(super) nots: Vec<Value>,
    /// `if`, `then`, `else`.
    pub(super) conds: Vec<(Value, Value, Value)>,
    /// A conjunct is `false`: no instance is valid.
    pub(super) never: bool,
    /// References that were not followed.
    pub(super) opaque: Vec<String>,
}

impl Flat {
    /// The schema again, as one value (used to pair `W`'s other conjuncts with one branch).
    pub(super) fn rebuild(&self, skip_group: usize) -> Value {
        let mut all: Vec<Value> = self.bases.iter().cloned().map(Value::Object).collect();
        for (i, (one_of, branches)) in self.groups.iter().enumerate() {
            if i != skip_group {
                let key = if *one_of { "oneOf" } else { "anyOf" };
                all.push(json!({ key: branches }));
            }
        }
        all.extend(self.nots.iter().map(|n| json!({ "not": n })));
        all.extend(
            self.conds
                .iter()
                .map(|(i, t, e)| json!({ "if": i, "then": t, "else": e })),
        );
        if self.never {
            all.push(Value::Bool(false));
        }
        json!({ "allOf": all })
    }
}

/// The values a schema is limited to by `const`/`enum` alone (no validation of them).
pub(super) fn enumerated_literal(base: &Map<String, Value>) -> Option<Vec<Value>> {
    match (base.get("const"), base.get("enum")) {
        (Some(c), _) => Some(vec![c.clone()]),
        (None, Some(Value::Array(values))) => Some(values.clone()),
        _ => None,
    }
}

/// Merges a writer's conjuncts into one schema that admits at least every instance they all
/// admit (merging may lose precision, never soundness).
pub(super) fn merge(bases: &[Map<String, Value>], draft: Draft) -> Map<String, Value> {
    let mut merged = Map::new();
    for base in bases {
        for (key, value) in base {
            let Some(existing) = merged.get(key).cloned() else {
                merged.insert(key.clone(), value.clone());
                continue;
            };
            if &existing == value {
                continue;
            }
            let combined = match key.as_str() {
                "type" => {
                    let a = types(&Map::from_iter([("type".to_owned(), existing.clone())]));
                    let b = types(&Map::from_iter([("type".to_owned(), value.clone())]));
                    let both: Vec<Value> = ALL_TYPES
                        .iter()
                        // `admits` makes integer ∩ number = integer.
                        .filter(|t| admits(&a, t) && admits(&b, t))
                        .map(|t| Value::String((*t).to_owned()))
                        .collect();
                    Value::Array(both)
                }
                "required" => {
                    let mut names = string_set(&merged, "required");
                    names.extend(string_set(base, "required"));
                    Value::Array(names.into_iter().map(Value::String).collect())
                }
                "enum" => Value::Array(
                    existing
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|v| {
                            value
                                .as_array()
                                .is_some_and(|vs| vs.iter().any(|w| same_value(v, w)))
                        })
                        .cloned()
                        .collect(),
                ),
                "properties" | "patternProperties" | "dependentSchemas" | "$defs"
                | "definitions" => {
                    let mut map = existing.as_object().cloned().unwrap_or_default();
                    for (k, v) in value.as_object().into_iter().flatten() {
                        let entry = match map.remove(k) {
                            Some(old) if old != *v => json!({ "allOf": [old, v] }),
                            Some(old) => old,
                            None => v.clone(),
                        };
                        map.insert(k.clone(), entry);
                    }
                    Value::Object(map)
                }
                "minimum" | "minLength" | "minItems" | "minProperties" | "minContains" => {
                    max_number(&existing, value)
                }
                "maximum" | "maxLength" | "maxItems" | "maxProperties" | "maxContains" => {
                    min_number(&existing, value)
                }
                "exclusiveMinimum" if draft > Draft::D4 => max_number(&existing, value),
                "exclusiveMaximum" if draft > Draft::D4 => min_number(&existing, value),
                "additionalProperties"
                | "items"
                | "additionalItems"
                | "propertyNames"
                | "contains"
                | "unevaluatedProperties"
                | "unevaluatedItems"
                    if !existing.is_array() && !value.is_array() =>
                {
                    json!({ "allOf": [existing, value] })
                }
                // Keeping one of two constraints admits more instances: safe for a writer.
                _ => existing,
            };
            merged.insert(key.clone(), combined);
        }
    }
    merged
}

fn max_number(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if y > x => b.clone(),
        _ => a.clone(),
    }
}

fn min_number(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if y < x => b.clone(),
        _ => a.clone(),
    }
}

impl<'a> Cx<'a> {
    pub(super) fn flatten(&self, schema: &Value, side: Side) -> Flat {
        let mut flat = Flat::default();
        self.flatten_into(schema, side, &mut flat, 0);
        flat
    }

    fn flatten_into(&self, schema: &Value, side: Side, out: &mut Flat, depth: usize) {
        let map = match schema {
            Value::Bool(true) => return,
            Value::Object(map) => map,
            // `false`, or not a schema at all (meta-validation rules that out).
            _ => {
                out.never = true;
                return;
            }
        };
        if depth > MAX_DEPTH {
            out.opaque.push("(too deeply nested references)".into());
            return;
        }
        let doc = self.doc(side);
        let map = self.normalize_unevaluated(map, side);
        if let Some(Value::String(reference)) = map.get("$ref") {
            match doc.resolve(reference) {
                Target::Found(target) => self.flatten_into(target, side, out, depth + 1),
                Target::Opaque | Target::Missing => out.opaque.push(reference.clone()),
            }
            if doc.draft <= Draft::D7 {
                // Before 2019-09, `$ref` replaces its siblings.
                return;
            }
        }
        for key in ["$dynamicRef", "$recursiveRef"] {
            if let Some(reference) = map.get(key) {
                out.opaque.push(format!("{key} {reference}"));
            }
        }
        if let Some(Value::Array(items)) = map.get("allOf") {
            for item in items {
                self.flatten_into(item, side, out, depth + 1);
            }
        }
        if let Some(Value::Array(items)) = map.get("anyOf") {
            out.groups.push((false, items.clone()));
        }
        if let Some(Value::Array(items)) = map.get("oneOf") {
            out.groups.push((true, items.clone()));
        }
        if let Some(not) = map.get("not") {
            out.nots.push(not.clone());
        }
        if let Some(condition) = map.get("if") {
            let branch = |key| map.get(key).cloned().unwrap_or(Value::Bool(true));
            out.conds
                .push((condition.clone(), branch("then"), branch("else")));
        }
        let base: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| {
                !COMBINATORS.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !base.is_empty() {
            out.bases.push(base);
        }
    }

    /// Rewrites `unevaluatedProperties`/`unevaluatedItems` into `additionalProperties`/items
    /// over what the schema evaluates (see the module docs).
    fn normalize_unevaluated(&self, map: &Map<String, Value>, side: Side) -> Map<String, Value> {
        let mut map = map.clone();
        if let Some(unevaluated) = map.remove("unevaluatedProperties")
            && !map.contains_key("additionalProperties")
        {
            let mut names = BTreeSet::new();
            let mut patterns = BTreeSet::new();
            let mut everything = false;
            self.evaluated_properties(
                &Value::Object(map.clone()),
                side,
                &mut names,
                &mut patterns,
                &mut everything,
                0,
            );
            if !everything {
                let properties = map
                    .entry("properties")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(properties) = properties {
                    for name in names {
                        properties.entry(name).or_insert(Value::Bool(true));
                    }
                }
                let pattern_properties = map
                    .entry("patternProperties")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(pattern_properties) = pattern_properties {
                    for pattern in patterns {
                        pattern_properties
                            .entry(pattern)
                            .or_insert(Value::Bool(true));
                    }
                }
                map.insert("additionalProperties".into(), unevaluated);
            }
        }
        if let Some(unevaluated) = map.remove("unevaluatedItems") {
            let draft = self.doc(side).draft;
            let (_, rest_key) = if draft >= Draft::D2020 {
                ("prefixItems", "items")
            } else {
                ("items", "additionalItems")
            };
            let has_rest = if draft >= Draft::D2020 {
                map.contains_key("items")
            } else {
                matches!(map.get("items"), Some(Value::Object(_) | Value::Bool(_)))
                    || map.contains_key("additionalItems")
            };
            let conjuncts_declare_items = ["allOf", "anyOf", "oneOf", "$ref", "if"]
                .iter()
                .any(|k| map.contains_key(*k));
            if !has_rest && (side == Side::Reader || !conjuncts_declare_items) {
                // For a reader, treating unevaluated items as the rest is stricter than the
                // truth when subschemas evaluate some: safe. For a writer it would be looser
                // only without subschemas, so it is done only then.
                let tuple_form =
                    draft < Draft::D2020 && matches!(map.get("items"), Some(Value::Array(_)));
                let key = if draft >= Draft::D2020 || tuple_form {
                    rest_key
                } else {
                    "items"
                };
                map.insert(key.into(), unevaluated);
            }
        }
        map
    }

    /// Names and patterns of the properties a schema evaluates, through `allOf` and `$ref`
    /// (and, for a writer, every other subschema that may evaluate some).
    fn evaluated_properties(
        &self,
        schema: &Value,
        side: Side,
        names: &mut BTreeSet<String>,
        patterns: &mut BTreeSet<String>,
        everything: &mut bool,
        depth: usize,
    ) {
        let Value::Object(map) = schema else { return };
        if depth > MAX_DEPTH {
            return;
        }
        if let Some(properties) = object(map, "properties") {
            names.extend(properties.keys().cloned());
        }
        if let Some(pattern_properties) = object(map, "patternProperties") {
            patterns.extend(pattern_properties.keys().cloned());
        }
        if depth > 0
            && (map.contains_key("additionalProperties")
                || map.contains_key("unevaluatedProperties"))
        {
            *everything = true;
        }
        let mut subschemas: Vec<&Value> = Vec::new();
        if let Some(Value::String(reference)) = map.get("$ref")
            && let Target::Found(target) = self.doc(side).resolve(reference)
        {
            subschemas.push(target);
        }
        if let Some(Value::Array(items)) = map.get("allOf") {
            subschemas.extend(items);
        }
        if side == Side::Writer {
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(items)) = map.get(key) {
                    subschemas.extend(items);
                }
            }
            for key in ["if", "then", "else"] {
                if let Some(item) = map.get(key) {
                    subschemas.push(item);
                }
            }
            if let Some(dependent) = object(map, "dependentSchemas") {
                subschemas.extend(dependent.values());
            }
        }
        for sub in subschemas {
            self.evaluated_properties(sub, side, names, patterns, everything, depth + 1);
        }
    }
}
