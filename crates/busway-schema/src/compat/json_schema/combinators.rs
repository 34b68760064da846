//! The inclusion check itself and the composition rules: `allOf`, `anyOf`, `oneOf`, `not`, `if`.

use serde_json::{Map, Value, json};

use super::document::Target;
use super::flatten::{Flat, merge};
use super::keywords::{ANNOTATIONS, accepts_all, contains_ref, is_false, types};
use super::{Cx, MAX_DEPTH, Side, cannot};
use crate::compat::Incompatibility;

fn closest_reason(closest: Option<Vec<Incompatibility>>) -> String {
    closest
        .and_then(|found| found.into_iter().next())
        .map(|v| {
            format!(
                " (closest branch: {}{})",
                if v.path.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", v.path)
                },
                v.message
            )
        })
        .unwrap_or_default()
}

impl<'a> Cx<'a> {
    /// Proves that every instance of `w` (writer) is an instance of `r` (reader); returns what
    /// breaks or cannot be proven.
    pub(super) fn sub(&mut self, w: &Value, r: &Value, path: &str) -> Vec<Incompatibility> {
        if is_false(w) || accepts_all(r) {
            return Vec::new();
        }
        // Equal text means equal meaning only within one draft and without references (which
        // resolve in different documents).
        if w == r && self.writer.draft == self.reader.draft && !contains_ref(w) {
            return Vec::new();
        }
        if self.depth > MAX_DEPTH {
            return vec![cannot(path, "the schemas nest too deeply to compare")];
        }
        let key = (contains_ref(w) || contains_ref(r)).then(|| {
            (
                self.identity(w, Side::Writer),
                self.identity(r, Side::Reader),
            )
        });
        if let Some(key) = &key {
            match self.in_progress.get(key) {
                // Already under comparison further up, and we went down into the instance
                // since (a property or an item): assume inclusion. Instances are finite, so
                // this coinductive step is sound.
                Some(&nesting) if nesting < self.nesting => return Vec::new(),
                // The same pair again without descending: a recursion that never reaches a
                // smaller instance, which no validator could evaluate either.
                Some(_) => {
                    return vec![cannot(
                        path,
                        "a reference loops back to itself without descending into the instance",
                    )];
                }
                None => {
                    self.in_progress.insert(key.clone(), self.nesting);
                }
            }
        }
        self.depth += 1;
        let found = self.sub_flat(w, r, path);
        self.depth -= 1;
        if let Some(key) = key {
            self.in_progress.remove(&key);
        }
        found
    }

    /// `sub` for a part of the instance (a property value or an item).
    pub(super) fn sub_child(&mut self, w: &Value, r: &Value, path: &str) -> Vec<Incompatibility> {
        self.nesting += 1;
        let found = self.sub(w, r, path);
        self.nesting -= 1;
        found
    }

    /// A key for a subschema under comparison: a bare reference is its target, so the same
    /// definition reached through different references is recognised.
    fn identity(&self, schema: &Value, side: Side) -> String {
        let mut current = schema;
        for _ in 0..MAX_DEPTH {
            let Value::Object(map) = current else { break };
            let bare = map
                .keys()
                .all(|k| k == "$ref" || ANNOTATIONS.contains(&k.as_str()));
            match (bare, map.get("$ref")) {
                (true, Some(Value::String(reference))) => match self.doc(side).resolve(reference) {
                    Target::Found(target) => current = target,
                    Target::Opaque | Target::Missing => break,
                },
                _ => break,
            }
        }
        current.to_string()
    }

    fn sub_flat(&mut self, w: &Value, r: &Value, path: &str) -> Vec<Incompatibility> {
        let wf = self.flatten(w, Side::Writer);
        if wf.never {
            return Vec::new();
        }
        // A writer disjunction is included when each of its branches is.
        if let Some((_, branches)) = wf.groups.first() {
            let rest = wf.rebuild(0);
            let mut found = Vec::new();
            for branch in branches {
                found.extend(self.sub(&json!({ "allOf": [rest, branch] }), r, path));
            }
            return found;
        }
        let merged = merge(&wf.bases, self.writer.draft);
        if let Some(values) = self.enumerated(&merged, w) {
            return self.values_in(&values, r, path);
        }
        let rf = self.flatten(r, Side::Reader);
        let mut found = Vec::new();
        if rf.never {
            found.push(Incompatibility::new(
                path,
                "the reader accepts no value here",
            ));
            return found;
        }
        for reference in &rf.opaque {
            found.push(cannot(
                path,
                format!("the reader refers to `{reference}`, which is not followed (only references within the document are)"),
            ));
        }
        for base in &rf.bases {
            found.extend(self.sub_base_of(&wf, &merged, base, path));
        }
        if !rf.groups.is_empty()
            && let Some(set) = types(&merged)
            && set.len() > 1
        {
            // Different types of the writer may fall into different reader branches: compare
            // them one type at a time.
            for t in set {
                let single = json!({ "allOf": [w, { "type": t }] });
                let branch_r = json!({ "allOf": rf.groups.iter().map(|(one_of, branches)| {
                    json!({ if *one_of { "oneOf" } else { "anyOf" }: branches })
                }).collect::<Vec<_>>() });
                found.extend(self.sub_groups(&single, &branch_r, path));
            }
        } else {
            found.extend(self.sub_groups(w, r, path));
        }
        for not in &rf.nots {
            if !self.disjoint(w, not, 0) {
                found.push(cannot(
                    path,
                    "the reader rejects values matching its `not` schema; the writer's values \
                     are not provably outside it",
                ));
            }
        }
        for (condition, then, otherwise) in &rf.conds {
            found.extend(self.sub_cond(w, condition, then, otherwise, path));
        }
        found
    }

    /// `W` against the reader's `anyOf`/`oneOf` groups (only those of `r` are looked at).
    fn sub_groups(&mut self, w: &Value, r: &Value, path: &str) -> Vec<Incompatibility> {
        let rf = self.flatten(r, Side::Reader);
        let mut found = Vec::new();
        for (one_of, branches) in &rf.groups {
            found.extend(if *one_of {
                self.sub_one_of(w, branches, path)
            } else {
                self.sub_any_of(w, branches, path)
            });
        }
        found
    }

    /// `W` (as its merged conjuncts) against one reader base; falls back to single writer
    /// conjuncts when merging loses the proof.
    fn sub_base_of(
        &mut self,
        wf: &Flat,
        merged: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) -> Vec<Incompatibility> {
        let found = self.sub_base(merged, r, path);
        if found.is_empty() || wf.bases.len() < 2 {
            return found;
        }
        for base in &wf.bases {
            if self.sub_base(base, r, path).is_empty() {
                return Vec::new();
            }
        }
        found
    }

    fn sub_any_of(&mut self, w: &Value, branches: &[Value], path: &str) -> Vec<Incompatibility> {
        let mut closest: Option<Vec<Incompatibility>> = None;
        for branch in branches {
            let found = self.sub(w, branch, path);
            if found.is_empty() {
                return found;
            }
            if closest.as_ref().is_none_or(|c| found.len() < c.len()) {
                closest = Some(found);
            }
        }
        vec![cannot(
            path,
            format!(
                "no single branch of the reader's `anyOf` accepts every value of the writer{}",
                closest_reason(closest)
            ),
        )]
    }

    fn sub_one_of(&mut self, w: &Value, branches: &[Value], path: &str) -> Vec<Incompatibility> {
        let mut closest: Option<Vec<Incompatibility>> = None;
        for (i, branch) in branches.iter().enumerate() {
            let found = self.sub(w, branch, path);
            if !found.is_empty() {
                if closest.as_ref().is_none_or(|c| found.len() < c.len()) {
                    closest = Some(found);
                }
                continue;
            }
            let exclusive = branches
                .iter()
                .enumerate()
                .all(|(j, other)| i == j || self.disjoint(w, other, 0));
            if exclusive {
                return Vec::new();
            }
            return vec![cannot(
                path,
                format!(
                    "the writer's values match branch {i} of the reader's `oneOf`, but are not \
                     provably outside its other branches"
                ),
            )];
        }
        vec![cannot(
            path,
            format!(
                "no single branch of the reader's `oneOf` accepts every value of the writer{}",
                closest_reason(closest)
            ),
        )]
    }

    fn sub_cond(
        &mut self,
        w: &Value,
        condition: &Value,
        then: &Value,
        otherwise: &Value,
        path: &str,
    ) -> Vec<Incompatibility> {
        if self.sub(w, condition, path).is_empty() {
            return self.sub(w, then, path);
        }
        if self.disjoint(w, condition, 0) {
            return self.sub(w, otherwise, path);
        }
        let mut found = self.sub(w, then, path);
        found.extend(self.sub(w, otherwise, path));
        if found.is_empty() {
            return found;
        }
        vec![cannot(
            path,
            "the writer's values are neither provably inside nor outside the reader's `if`, and \
             not all accepted by both `then` and `else`",
        )]
    }
}
