//! Object rules: properties and content models, `required`, `propertyNames`, dependencies.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::constraints::num;
use super::document::Draft;
use super::keywords::{child, contains_ref, is_false, object, string_set};
use super::{CANNOT_PROVE, Cx, Side, cannot};
use crate::compat::Incompatibility;

impl<'a> Cx<'a> {
    pub(super) fn compare_objects(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let empty = Map::new();
        let w_props = object(w, "properties").unwrap_or(&empty);
        let r_props = object(r, "properties").unwrap_or(&empty);
        let names: BTreeSet<&String> = w_props.keys().chain(r_props.keys()).collect();
        for name in names {
            let ws = self.schema_for_key(w, name, Side::Writer);
            if is_false(&ws) {
                continue;
            }
            let rs = self.schema_for_key(r, name, Side::Reader);
            let at = child(path, name);
            if is_false(&rs) {
                found.push(Incompatibility::new(
                    &at,
                    format!(
                        "the writer may send property `{name}`, which the reader's closed \
                         content model rejects"
                    ),
                ));
            } else {
                found.extend(self.sub_child(&ws, &rs, &at));
            }
        }
        self.compare_other_properties(w, r, path, found);

        let w_required = string_set(w, "required");
        for name in string_set(r, "required").difference(&w_required) {
            let never = is_false(&self.schema_for_key(w, name, Side::Writer));
            found.push(Incompatibility::new(
                child(path, name),
                if never {
                    format!("the reader requires property `{name}`, which the writer never sends")
                } else {
                    format!("the reader requires property `{name}`, which the writer may omit")
                },
            ));
        }

        let w_min = num(w, "minProperties")
            .unwrap_or(0.0)
            .max(w_required.len() as f64);
        if let Some(r_min) = num(r, "minProperties")
            && r_min > w_min
        {
            found.push(Incompatibility::new(
                path,
                format!(
                    "the reader requires at least {r_min} properties; the writer allows {w_min}"
                ),
            ));
        }
        if let Some(r_max) = num(r, "maxProperties") {
            let closed = is_false(
                &w.get("additionalProperties")
                    .cloned()
                    .unwrap_or(Value::Bool(true)),
            ) && object(w, "patternProperties").is_none_or(Map::is_empty);
            let w_max = match num(w, "maxProperties") {
                Some(m) => Some(m),
                None if closed => Some(w_props.len() as f64),
                None => None,
            };
            if w_max.is_none_or(|m| m > r_max) {
                found.push(Incompatibility::new(
                    path,
                    format!("the reader allows at most {r_max} properties; the writer allows more"),
                ));
            }
        }

        if let Some(r_names) = r.get("propertyNames") {
            let string_names = json!({ "type": "string" });
            match w.get("propertyNames") {
                Some(w_names) => {
                    let w_names = json!({ "allOf": [string_names, w_names] });
                    found.extend(self.sub(&w_names, r_names, path));
                }
                None => {
                    let closed = is_false(
                        &w.get("additionalProperties")
                            .cloned()
                            .unwrap_or(Value::Bool(true)),
                    ) && object(w, "patternProperties").is_none_or(Map::is_empty);
                    if closed {
                        let names: Vec<Value> =
                            w_props.keys().map(|k| Value::String(k.clone())).collect();
                        found.extend(self.values_in(&names, r_names, path));
                    } else {
                        found.push(Incompatibility::new(
                            path,
                            "the reader restricts property names (`propertyNames`); the writer does not",
                        ));
                    }
                }
            }
        }
        self.compare_dependencies(w, r, path, found);
    }

    /// Properties neither side names: `additionalProperties` and `patternProperties`.
    fn compare_other_properties(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let any = Value::Bool(true);
        let empty = Map::new();
        let w_add = w.get("additionalProperties").unwrap_or(&any).clone();
        let r_add = r.get("additionalProperties").unwrap_or(&any).clone();
        let w_patterns = object(w, "patternProperties").unwrap_or(&empty).clone();
        let r_patterns = object(r, "patternProperties").unwrap_or(&empty).clone();
        // Writer sources of undeclared keys, reader targets: every pairing that may occur.
        let mut sources: Vec<(Option<&String>, &Value)> =
            w_patterns.iter().map(|(p, s)| (Some(p), s)).collect();
        sources.push((None, &w_add));
        let mut targets: Vec<(Option<&String>, &Value)> =
            r_patterns.iter().map(|(p, s)| (Some(p), s)).collect();
        targets.push((None, &r_add));
        let at = child(path, "*");
        for (source_pattern, source) in &sources {
            if is_false(source) {
                continue;
            }
            for (target_pattern, target) in &targets {
                // A key matching a writer pattern may match any reader pattern too, but not the
                // reader's `additionalProperties` if the reader has that very pattern; likewise
                // a key under the writer's `additionalProperties` matches no writer pattern.
                let pairable = match (source_pattern, target_pattern) {
                    (Some(_), Some(_)) => true,
                    (Some(s), None) => !r_patterns.contains_key(*s),
                    (None, Some(t)) => !w_patterns.contains_key(*t),
                    (None, None) => true,
                };
                if !pairable {
                    continue;
                }
                if is_false(target) {
                    found.push(Incompatibility::new(
                        &at,
                        match source_pattern {
                            Some(p) => format!(
                                "the writer may send properties matching `{p}`, which the \
                                 reader's closed content model rejects"
                            ),
                            None => "the writer's open content model may send undeclared \
                                     properties, which the reader's closed content model rejects"
                                .to_owned(),
                        },
                    ));
                    continue;
                }
                let mut sub = self.sub_child(source, target, &at);
                if source_pattern.is_none() && target_pattern.is_none() && !sub.is_empty() {
                    for v in &mut sub {
                        if !v.message.starts_with(CANNOT_PROVE) {
                            v.message = format!(
                                "undeclared properties: the reader's `additionalProperties` is \
                                 stricter than the writer's ({})",
                                v.message
                            );
                        }
                    }
                }
                found.extend(sub);
            }
        }
    }

    fn compare_dependencies(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let reader_draft = self.reader.draft;
        let mut r_required: Vec<(String, BTreeSet<String>)> = Vec::new();
        let mut r_schemas: Vec<(String, Value)> = Vec::new();
        let mut collect = |map: Option<&Map<String, Value>>, schemas_allowed: bool| {
            for (key, value) in map.into_iter().flatten() {
                match value {
                    Value::Array(names) => r_required.push((
                        key.clone(),
                        names
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect(),
                    )),
                    other if schemas_allowed => r_schemas.push((key.clone(), other.clone())),
                    _ => {}
                }
            }
        };
        if reader_draft <= Draft::D7 {
            collect(object(r, "dependencies"), true);
        } else {
            collect(object(r, "dependentRequired"), false);
            collect(object(r, "dependentSchemas"), true);
        }
        let w_required = string_set(w, "required");
        let w_dependent = |key: &str| -> BTreeSet<String> {
            ["dependentRequired", "dependencies"]
                .iter()
                .filter_map(|k| object(w, k))
                .filter_map(|m| m.get(key))
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        for (key, names) in r_required {
            if is_false(&self.schema_for_key(w, &key, Side::Writer)) {
                continue;
            }
            let guaranteed: BTreeSet<String> =
                w_required.union(&w_dependent(&key)).cloned().collect();
            let missing: Vec<&String> = names.difference(&guaranteed).collect();
            if !missing.is_empty() {
                found.push(Incompatibility::new(
                    child(path, &key),
                    format!(
                        "when `{key}` is present the reader requires {}; the writer does not",
                        missing
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        for (key, schema) in r_schemas {
            if is_false(&self.schema_for_key(w, &key, Side::Writer)) {
                continue;
            }
            let same = ["dependentSchemas", "dependencies"]
                .iter()
                .filter_map(|k| object(w, k))
                .filter_map(|m| m.get(&key))
                .any(|s| s == &schema && !contains_ref(s));
            if same {
                continue;
            }
            let unconditional = self.sub(&Value::Object(w.clone()), &schema, path);
            if !unconditional.is_empty() {
                found.push(cannot(
                    child(path, &key),
                    format!("the reader's dependent schema for `{key}` is not provably satisfied by the writer"),
                ));
            }
        }
    }

    /// The schema a base applies to property `key`: `properties`, matching
    /// `patternProperties` (all of them), else `additionalProperties`.
    pub(super) fn schema_for_key(
        &mut self,
        base: &Map<String, Value>,
        key: &str,
        side: Side,
    ) -> Value {
        let mut parts = Vec::new();
        if let Some(schema) = object(base, "properties").and_then(|p| p.get(key)) {
            parts.push(schema.clone());
        }
        if let Some(patterns) = object(base, "patternProperties") {
            for (pattern, schema) in patterns {
                if self.pattern_matches(pattern, key, side) {
                    parts.push(schema.clone());
                }
            }
        }
        match parts.len() {
            0 => base
                .get("additionalProperties")
                .cloned()
                .unwrap_or(Value::Bool(true)),
            1 => parts.remove(0),
            _ => json!({ "allOf": parts }),
        }
    }

    /// Whether a (validated) pattern matches a string. Should it fail to compile after all,
    /// assume a match for the reader (stricter: safe) and none for the writer.
    fn pattern_matches(&mut self, pattern: &str, text: &str, side: Side) -> bool {
        let mini = Map::from_iter([("pattern".to_owned(), Value::String(pattern.to_owned()))]);
        match self.validator(Draft::D2020, &mini) {
            Some(validator) => validator.is_valid(&Value::String(text.to_owned())),
            None => side == Side::Reader,
        }
    }
}
