//! Array rules: positional items, the rest, `contains` and the item counts.

use serde_json::{Map, Value};

use super::constraints::num;
use super::document::Draft;
use super::keywords::{contains_ref, is_false};
use super::{Cx, cannot};
use crate::compat::Incompatibility;

/// An array schema seen as positions and the rest: (positional item schemas, rest schema).
pub(super) fn tuple(base: &Map<String, Value>, draft: Draft) -> (Vec<Value>, Value) {
    let any = Value::Bool(true);
    if draft >= Draft::D2020 {
        let prefix = base
            .get("prefixItems")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        (prefix, base.get("items").cloned().unwrap_or(any))
    } else {
        match base.get("items") {
            Some(Value::Array(prefix)) => (
                prefix.clone(),
                base.get("additionalItems").cloned().unwrap_or(any),
            ),
            Some(items) => (Vec::new(), items.clone()),
            None => (Vec::new(), any),
        }
    }
}

impl<'a> Cx<'a> {
    pub(super) fn compare_arrays(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let (w_prefix, w_rest) = tuple(w, self.writer.draft);
        let (r_prefix, r_rest) = tuple(r, self.reader.draft);
        let w_max =
            num(w, "maxItems").or_else(|| is_false(&w_rest).then_some(w_prefix.len() as f64));
        let positions = w_prefix.len().max(r_prefix.len());
        for i in 0..positions {
            if w_max.is_some_and(|m| (i as f64) >= m) {
                break;
            }
            let ws = w_prefix.get(i).unwrap_or(&w_rest);
            let rs = r_prefix.get(i).unwrap_or(&r_rest);
            let at = format!("{path}[{i}]");
            if !is_false(ws) && is_false(rs) {
                found.push(Incompatibility::new(
                    &at,
                    format!("the writer may send an item at position {i}; the reader accepts none"),
                ));
            } else {
                found.extend(self.sub_child(ws, rs, &at));
            }
        }
        if w_max.is_none_or(|m| m > positions as f64) {
            let at = format!("{path}[]");
            if !is_false(&w_rest) && is_false(&r_rest) {
                found.push(Incompatibility::new(
                    &at,
                    format!("the writer may send more than {positions} items; the reader accepts no more"),
                ));
            } else {
                found.extend(self.sub_child(&w_rest, &r_rest, &at));
            }
        }
        let w_min = num(w, "minItems").unwrap_or(0.0);
        if let Some(r_min) = num(r, "minItems")
            && r_min > w_min
        {
            found.push(Incompatibility::new(
                path,
                format!("the reader requires at least {r_min} items; the writer allows {w_min}"),
            ));
        }
        if let Some(r_max) = num(r, "maxItems")
            && w_max.is_none_or(|m| m > r_max)
        {
            found.push(Incompatibility::new(
                path,
                format!("the reader allows at most {r_max} items; the writer allows more"),
            ));
        }
        if r.get("uniqueItems") == Some(&Value::Bool(true))
            && w.get("uniqueItems") != Some(&Value::Bool(true))
            && w_max.is_none_or(|m| m > 1.0)
        {
            found.push(Incompatibility::new(
                path,
                "the reader requires unique items; the writer does not",
            ));
        }
        if let Some(r_contains) = r.get("contains") {
            let r_min = num(r, "minContains").unwrap_or(1.0);
            let r_max = num(r, "maxContains");
            let same = w.get("contains") == Some(r_contains) && !contains_ref(r_contains);
            let w_min = num(w, "minContains").unwrap_or(1.0);
            let w_max = num(w, "maxContains");
            let bounds = w_min >= r_min && r_max.is_none_or(|rm| w_max.is_some_and(|wm| wm <= rm));
            if !(same && bounds) {
                found.push(cannot(
                    path,
                    "the reader requires `contains`; the writer does not provably guarantee it",
                ));
            }
        }
    }
}
