//! The resolution rules: walking writer and reader shapes together, reporting what fails.

use std::collections::{HashMap, HashSet};

use apache_avro::Schema as AvroSchema;
use apache_avro::schema::{Name, RecordSchema};

use super::shape::{Shape, decimal, named_types, names_match, shape};
use crate::compat::Incompatibility;

/// How well a writer's type fits a reader's union branch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fit {
    /// Same type (and, for named types, matching name).
    Exact,
    /// The writer's type promotes to the reader's.
    Promoted,
}

pub(super) struct Checker<'a> {
    pub(super) writer_names: HashMap<Name, &'a AvroSchema>,
    pub(super) reader_names: HashMap<Name, &'a AvroSchema>,
    /// Record pairs already compared (or being compared): recursion stops there.
    pub(super) visited: HashSet<(Name, Name)>,
    pub(super) found: Vec<Incompatibility>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(writer: &'a AvroSchema, reader: &'a AvroSchema) -> Self {
        Self {
            writer_names: named_types(writer),
            reader_names: named_types(reader),
            visited: HashSet::new(),
            found: Vec::new(),
        }
    }

    pub(super) fn run(
        mut self,
        writer: &'a AvroSchema,
        reader: &'a AvroSchema,
    ) -> Vec<Incompatibility> {
        let path = reader
            .name()
            .or(writer.name())
            .map(|n| n.name().to_owned())
            .unwrap_or_default();
        self.check(writer, reader, &path);
        self.found
    }

    fn report(&mut self, path: &str, message: impl Into<String>) {
        self.found.push(Incompatibility::new(path, message));
    }

    /// Follows a named reference to its definition; a schema that is not a reference is itself.
    fn deref(&self, schema: &'a AvroSchema, writer_side: bool) -> &'a AvroSchema {
        let mut current = schema;
        // A reference names a definition, never another reference, but guard against cycles.
        for _ in 0..8 {
            let AvroSchema::Ref { name } = current else {
                return current;
            };
            let names = if writer_side {
                &self.writer_names
            } else {
                &self.reader_names
            };
            match names.get(name) {
                Some(definition) => current = definition,
                None => return current,
            }
        }
        current
    }

    fn check(&mut self, writer: &'a AvroSchema, reader: &'a AvroSchema, path: &str) {
        let writer = self.deref(writer, true);
        let reader = self.deref(reader, false);
        match (shape(writer), shape(reader)) {
            (Shape::Union(writer_branches), Shape::Union(reader_branches)) => {
                for branch in writer_branches {
                    let branch = self.deref(branch, true);
                    match self.pick_branch(branch, reader_branches) {
                        Some(target) => self.check(branch, target, path),
                        None => self.report(
                            path,
                            format!(
                                "the writer's union branch {} matches no branch of the reader's union",
                                shape(branch).describe()
                            ),
                        ),
                    }
                }
            }
            (Shape::Union(writer_branches), _) => {
                for branch in writer_branches {
                    let branch = self.deref(branch, true);
                    if self.fit(branch, reader).is_some() {
                        self.check(branch, reader, path);
                    } else {
                        self.report(
                            path,
                            format!(
                                "the writer's union branch {} cannot be read as {}",
                                shape(branch).describe(),
                                shape(reader).describe()
                            ),
                        );
                    }
                }
            }
            (_, Shape::Union(reader_branches)) => match self.pick_branch(writer, reader_branches) {
                Some(target) => self.check(writer, target, path),
                None => self.report(
                    path,
                    format!(
                        "{} matches no branch of the reader's union",
                        shape(writer).describe()
                    ),
                ),
            },
            _ => self.check_single(writer, reader, path),
        }
    }

    /// The reader union branch a writer's (non-union) type resolves to: a branch of the same
    /// type first, else the first branch the writer's type promotes to.
    fn pick_branch(
        &self,
        writer: &'a AvroSchema,
        reader_branches: &'a [AvroSchema],
    ) -> Option<&'a AvroSchema> {
        let mut best: Option<(Fit, &'a AvroSchema)> = None;
        for branch in reader_branches {
            let branch = self.deref(branch, false);
            if let Some(fit) = self.fit(writer, branch)
                && best.is_none_or(|(b, _)| fit < b)
            {
                best = Some((fit, branch));
            }
        }
        best.map(|(_, branch)| branch)
    }

    /// Whether a writer's type matches a reader's (both dereferenced, neither a union), in the
    /// specification's sense: the precondition for resolving one against the other.
    fn fit(&self, writer: &'a AvroSchema, reader: &'a AvroSchema) -> Option<Fit> {
        use Shape as S;
        match (shape(writer), shape(reader)) {
            (S::Null, S::Null)
            | (S::Boolean, S::Boolean)
            | (S::Int, S::Int)
            | (S::Long, S::Long)
            | (S::Float, S::Float)
            | (S::Double, S::Double)
            | (S::Bytes, S::Bytes)
            | (S::String, S::String)
            | (S::Array(_), S::Array(_))
            | (S::Map(_), S::Map(_)) => Some(Fit::Exact),
            (S::Int, S::Long | S::Float | S::Double)
            | (S::Long, S::Float | S::Double)
            | (S::Float, S::Double)
            | (S::String, S::Bytes)
            | (S::Bytes, S::String) => Some(Fit::Promoted),
            (S::Record(w), S::Record(r)) => {
                names_match(&w.name, &r.name, &r.aliases).then_some(Fit::Exact)
            }
            (S::Enum(w), S::Enum(r)) => {
                names_match(&w.name, &r.name, &r.aliases).then_some(Fit::Exact)
            }
            (S::Fixed(w), S::Fixed(r)) => (names_match(&w.name, &r.name, &r.aliases)
                && w.size == r.size)
                .then_some(Fit::Exact),
            _ => None,
        }
    }

    fn check_single(&mut self, writer: &'a AvroSchema, reader: &'a AvroSchema, path: &str) {
        use Shape as S;
        if let (Some(w), Some(r)) = (decimal(writer), decimal(reader))
            && w != r
        {
            self.report(
                path,
                format!(
                    "decimal precision/scale changed from ({}, {}) to ({}, {})",
                    w.0, w.1, r.0, r.1
                ),
            );
            return;
        }
        match (shape(writer), shape(reader)) {
            (S::Record(w), S::Record(r)) => {
                if !names_match(&w.name, &r.name, &r.aliases) {
                    self.report(
                        path,
                        format!(
                            "record `{}` cannot be read as record `{}` (names differ and no reader alias names it)",
                            w.name.name(),
                            r.name.name()
                        ),
                    );
                    return;
                }
                self.check_record(w, r, path);
            }
            (S::Enum(w), S::Enum(r)) => {
                if !names_match(&w.name, &r.name, &r.aliases) {
                    self.report(
                        path,
                        format!(
                            "enum `{}` cannot be read as enum `{}` (names differ and no reader alias names it)",
                            w.name.name(),
                            r.name.name()
                        ),
                    );
                    return;
                }
                if r.default.is_none() {
                    let missing: Vec<&str> = w
                        .symbols
                        .iter()
                        .filter(|s| !r.symbols.contains(s))
                        .map(String::as_str)
                        .collect();
                    if !missing.is_empty() {
                        self.report(
                            path,
                            format!(
                                "the writer's enum symbols {} are unknown to the reader's enum `{}`, which has no default",
                                quote_all(&missing),
                                r.name.name()
                            ),
                        );
                    }
                }
            }
            (S::Fixed(w), S::Fixed(r)) => {
                if !names_match(&w.name, &r.name, &r.aliases) {
                    self.report(
                        path,
                        format!(
                            "fixed `{}` cannot be read as fixed `{}` (names differ and no reader alias names it)",
                            w.name.name(),
                            r.name.name()
                        ),
                    );
                } else if w.size != r.size {
                    self.report(
                        path,
                        format!(
                            "fixed `{}` changed size from {} to {}",
                            r.name.name(),
                            w.size,
                            r.size
                        ),
                    );
                }
            }
            (S::Array(w), S::Array(r)) => self.check(w, r, &format!("{path}[]")),
            (S::Map(w), S::Map(r)) => self.check(w, r, &format!("{path}{{}}")),
            (w, r) => {
                if self.fit(writer, reader).is_none() {
                    let message = match (w, r) {
                        (S::Ref(name), _) | (_, S::Ref(name)) => {
                            format!("the named type `{}` is not defined", name.name())
                        }
                        _ => format!(
                            "type changed from {} to {}, which is not an Avro promotion",
                            w.describe(),
                            r.describe()
                        ),
                    };
                    self.report(path, message);
                }
            }
        }
    }

    fn check_record(&mut self, writer: &'a RecordSchema, reader: &'a RecordSchema, path: &str) {
        if !self
            .visited
            .insert((writer.name.clone(), reader.name.clone()))
        {
            // Compared already, or being compared further up a recursive type: its violations
            // are (or will be) reported there.
            return;
        }
        // A record at the top of a union has no path yet: name it after the record.
        let path = if path.is_empty() {
            reader.name.name()
        } else {
            path
        };
        for field in &reader.fields {
            let field_path = format!("{path}.{}", field.name);
            let source = std::iter::once(&field.name)
                .chain(field.aliases.iter())
                .find_map(|name| writer.fields.iter().find(|w| &w.name == name));
            match source {
                Some(written) => self.check(&written.schema, &field.schema, &field_path),
                None if field.default.is_some() => {}
                None => self.report(
                    &field_path,
                    format!(
                        "the reader's field `{}` is missing from the writer's record `{}` and has no default",
                        field.name,
                        writer.name.name()
                    ),
                ),
            }
        }
    }
}

fn quote_all(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
