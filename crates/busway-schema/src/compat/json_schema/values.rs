//! Single instances: validating one value against a schema, and proving two schemas disjoint.

use serde_json::{Map, Value};

use super::arrays::tuple;
use super::constraints::num;
use super::document::Draft;
use super::flatten::{enumerated_literal, merge};
use super::keywords::{ALL_TYPES, VALUE_ASSERTIONS, admits, is_false, object, string_set, types};
use super::{CANNOT_PROVE, Cx, MAX_DEPTH, Side};

impl<'a> Cx<'a> {
    pub(super) fn validator(
        &mut self,
        draft: Draft,
        mini: &Map<String, Value>,
    ) -> Option<&jsonschema::Validator> {
        let key = (draft, Value::Object(mini.clone()).to_string());
        self.validators
            .entry(key)
            .or_insert_with(|| {
                jsonschema::options()
                    .with_draft(draft.library())
                    .should_validate_formats(true)
                    .build(&Value::Object(mini.clone()))
                    .ok()
            })
            .as_ref()
    }

    /// Why `value` is invalid under `schema` (empty: valid).
    pub(super) fn check_value(
        &mut self,
        value: &Value,
        schema: &Value,
        side: Side,
        depth: usize,
    ) -> Vec<String> {
        if depth > MAX_DEPTH {
            return vec![format!("{CANNOT_PROVE} the schema nests too deeply")];
        }
        let flat = self.flatten(schema, side);
        if flat.never {
            return vec!["no value is allowed here".into()];
        }
        let mut reasons = Vec::new();
        if side == Side::Reader {
            for reference in &flat.opaque {
                reasons.push(format!("{CANNOT_PROVE} `{reference}` is not followed"));
            }
        }
        for base in &flat.bases {
            reasons.extend(self.check_value_base(value, base, side, depth));
        }
        for (one_of, branches) in &flat.groups {
            let matching = branches
                .iter()
                .filter(|b| self.check_value(value, b, side, depth + 1).is_empty())
                .count();
            if *one_of && matching != 1 {
                reasons.push(format!(
                    "it matches {matching} branches of `oneOf`, not exactly one"
                ));
            } else if !*one_of && matching == 0 {
                reasons.push("it matches no branch of `anyOf`".into());
            }
        }
        for not in &flat.nots {
            if self.check_value(value, not, side, depth + 1).is_empty() {
                reasons.push("it matches the `not` schema".into());
            }
        }
        for (condition, then, otherwise) in &flat.conds {
            let branch = if self
                .check_value(value, condition, side, depth + 1)
                .is_empty()
            {
                then
            } else {
                otherwise
            };
            reasons.extend(self.check_value(value, branch, side, depth + 1));
        }
        reasons
    }

    fn check_value_base(
        &mut self,
        value: &Value,
        base: &Map<String, Value>,
        side: Side,
        depth: usize,
    ) -> Vec<String> {
        let draft = self.doc(side).draft;
        let mut reasons = Vec::new();
        let mut mini: Map<String, Value> = base
            .iter()
            .filter(|(k, _)| VALUE_ASSERTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if draft <= Draft::D7
            && let Some(Value::Object(dependencies)) = base.get("dependencies")
        {
            let lists: Map<String, Value> = dependencies
                .iter()
                .filter(|(_, v)| v.is_array())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !lists.is_empty() {
                mini.insert("dependencies".into(), Value::Object(lists));
            }
        }
        if !mini.is_empty() {
            match self.validator(draft, &mini) {
                Some(validator) => {
                    if let Err(error) = validator.validate(value) {
                        reasons.push(error.to_string());
                    }
                }
                None => reasons.push(format!(
                    "{CANNOT_PROVE} cannot evaluate {}",
                    Value::Object(mini)
                )),
            }
        }
        match value {
            Value::Object(instance) => {
                for (key, item) in instance {
                    let schema = self.schema_for_key(base, key, side);
                    for reason in self.check_value(item, &schema, side, depth + 1) {
                        reasons.push(format!("property `{key}`: {reason}"));
                    }
                    if let Some(names) = base.get("propertyNames") {
                        let name = Value::String(key.clone());
                        for reason in self.check_value(&name, names, side, depth + 1) {
                            reasons.push(format!("property name `{key}`: {reason}"));
                        }
                    }
                }
                let dependent = if draft <= Draft::D7 {
                    object(base, "dependencies")
                } else {
                    object(base, "dependentSchemas")
                };
                for (key, schema) in dependent.into_iter().flatten() {
                    if instance.contains_key(key) && !schema.is_array() {
                        reasons.extend(self.check_value(value, schema, side, depth + 1));
                    }
                }
            }
            Value::Array(items) => {
                let (prefix, rest) = tuple(base, draft);
                for (i, item) in items.iter().enumerate() {
                    let schema = prefix.get(i).unwrap_or(&rest).clone();
                    for reason in self.check_value(item, &schema, side, depth + 1) {
                        reasons.push(format!("item {i}: {reason}"));
                    }
                }
                if let Some(contains) = base.get("contains") {
                    let count = items
                        .iter()
                        .filter(|item| self.check_value(item, contains, side, depth + 1).is_empty())
                        .count() as f64;
                    let min = num(base, "minContains").unwrap_or(1.0);
                    let max = num(base, "maxContains");
                    if count < min || max.is_some_and(|m| count > m) {
                        reasons.push(format!("{count} items match `contains`"));
                    }
                }
            }
            _ => {}
        }
        reasons
    }

    /// Whether no instance satisfies both the writer's `w` and the reader's `x` (a sufficient
    /// test: `false` means "not proven").
    pub(super) fn disjoint(&mut self, w: &Value, x: &Value, depth: usize) -> bool {
        if depth > 8 {
            return false;
        }
        let wf = self.flatten(w, Side::Writer);
        if wf.never {
            return true;
        }
        let merged = merge(&wf.bases, self.writer.draft);
        if wf.groups.is_empty()
            && let Some(values) = self.enumerated(&merged, w)
        {
            return values
                .iter()
                .all(|v| !self.check_value(v, x, Side::Reader, 0).is_empty());
        }
        let xf = self.flatten(x, Side::Reader);
        if xf.never {
            return true;
        }
        let x_merged = merge(&xf.bases, self.reader.draft);
        if let Some(values) = enumerated_literal(&x_merged) {
            return values
                .iter()
                .all(|v| !self.check_value(v, w, Side::Writer, 0).is_empty());
        }
        let (w_types, x_types) = (types(&merged), types(&x_merged));
        if ALL_TYPES
            .iter()
            .all(|t| !(admits(&w_types, t) && admits(&x_types, t)))
        {
            return true;
        }
        // The remaining proofs look at properties, so they hold only if the two can share
        // nothing but objects.
        let shared_non_object = ALL_TYPES
            .iter()
            .any(|t| *t != "object" && admits(&w_types, t) && admits(&x_types, t));
        if shared_non_object {
            return false;
        }
        // A property one side requires and the other forbids, or both sides constrain apart.
        for name in string_set(&x_merged, "required") {
            if is_false(&self.schema_for_key(&merged, &name, Side::Writer)) {
                return true;
            }
        }
        let x_props = object(&x_merged, "properties").cloned().unwrap_or_default();
        for name in string_set(&merged, "required") {
            if let Some(xs) = x_props.get(&name) {
                let ws = self.schema_for_key(&merged, &name, Side::Writer);
                if self.disjoint(&ws, xs, depth + 1) {
                    return true;
                }
            }
        }
        false
    }
}
