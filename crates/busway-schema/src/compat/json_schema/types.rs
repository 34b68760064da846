//! Type sets and finite value sets (`type`, `enum`, `const`).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::constraints::{is_integral, num};
use super::keywords::{ALL_TYPES, admits, same_value, types};
use super::{CANNOT_PROVE, Cx, Side, cannot};
use crate::compat::Incompatibility;

fn describe_types(set: &Option<BTreeSet<&'static str>>) -> String {
    match set {
        None => "any type".into(),
        Some(set) if set.is_empty() => "no type".into(),
        Some(set) => set.iter().copied().collect::<Vec<_>>().join(", "),
    }
}

fn describe_values(base: &Map<String, Value>) -> String {
    match (base.get("const"), base.get("enum")) {
        (Some(c), _) => format!("the constant {c}"),
        (None, Some(values)) => format!("the values {values}"),
        _ => "certain values".into(),
    }
}

impl<'a> Cx<'a> {
    /// Values are checked one by one: the exact verdict for a writer limited to them.
    pub(super) fn values_in(
        &mut self,
        values: &[Value],
        r: &Value,
        path: &str,
    ) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        for value in values {
            let reasons = self.check_value(value, r, Side::Reader, 0);
            if !reasons.is_empty() {
                let cannot_prove = reasons.iter().all(|r| r.starts_with(CANNOT_PROVE));
                let message = format!(
                    "the writer may send {value}, which the reader rejects: {}",
                    reasons.join("; ")
                );
                found.push(if cannot_prove {
                    cannot(path, message)
                } else {
                    Incompatibility::new(path, message)
                });
            }
        }
        found
    }

    /// The finite set of values a writer allows, if it is limited to one.
    pub(super) fn enumerated(
        &mut self,
        merged: &Map<String, Value>,
        w: &Value,
    ) -> Option<Vec<Value>> {
        let mut candidates: Option<Vec<Value>> = None;
        let mut restrict = |values: Vec<Value>| {
            candidates = Some(match candidates.take() {
                None => values,
                Some(current) => current
                    .into_iter()
                    .filter(|c| values.iter().any(|v| same_value(c, v)))
                    .collect(),
            });
        };
        if let Some(value) = merged.get("const") {
            restrict(vec![value.clone()]);
        }
        if let Some(Value::Array(values)) = merged.get("enum") {
            restrict(values.clone());
        }
        if let Some(set) = types(merged)
            && set.iter().all(|t| matches!(*t, "null" | "boolean"))
        {
            let mut values = Vec::new();
            if set.contains("null") {
                values.push(Value::Null);
            }
            if set.contains("boolean") {
                values.extend([Value::Bool(false), Value::Bool(true)]);
            }
            restrict(values);
        }
        let candidates = candidates?;
        // Keep the values the writer itself accepts (an enum may list values its type forbids).
        Some(
            candidates
                .into_iter()
                .filter(|v| self.check_value(v, w, Side::Writer, 0).is_empty())
                .collect(),
        )
    }

    /// The structural comparison of two schemas without composition keywords.
    pub(super) fn sub_base(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        let w_types = types(w);
        let r_types = types(r);
        let integral_multiple = num(w, "multipleOf").is_some_and(is_integral);
        // The writer's types that the reader admits: later keywords are compared for those.
        let mut live: Vec<&str> = Vec::new();
        for t in ALL_TYPES {
            let writer_has = match &w_types {
                None => true,
                Some(set) => set.contains(t) || (t == "integer" && set.contains("number")),
            };
            if !writer_has {
                continue;
            }
            if admits(&r_types, t) {
                live.push(t);
                continue;
            }
            if t == "number" && integral_multiple && admits(&r_types, "integer") {
                live.push("integer");
                continue;
            }
            let message = match (&w_types, t) {
                (None, _) => format!(
                    "the writer does not restrict the type; the reader accepts only {}",
                    describe_types(&r_types)
                ),
                (_, "number") if admits(&r_types, "integer") => {
                    "the writer may send non-integer numbers; the reader accepts only integers"
                        .to_owned()
                }
                _ => format!(
                    "the writer may send {t} values; the reader accepts only {}",
                    describe_types(&r_types)
                ),
            };
            found.push(Incompatibility::new(path, message));
            if w_types.is_none() {
                // One message for an unrestricted writer is enough.
                break;
            }
        }
        let has = |t: &str| live.contains(&t);

        if r.contains_key("enum") || r.contains_key("const") {
            found.push(Incompatibility::new(
                path,
                format!(
                    "the reader accepts only {}; the writer's values are not limited to them",
                    describe_values(r)
                ),
            ));
        }
        if has("string") {
            self.compare_strings(w, r, path, &mut found);
        }
        if has("integer") || has("number") {
            self.compare_numbers(w, r, !has("number"), path, &mut found);
        }
        if has("object") {
            self.compare_objects(w, r, path, &mut found);
        }
        if has("array") {
            self.compare_arrays(w, r, path, &mut found);
        }
        found
    }
}
