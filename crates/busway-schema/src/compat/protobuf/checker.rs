//! The wire rules: walking writer and reader messages together, reporting what fails.

use std::collections::{HashMap, HashSet};

use prost_reflect::{Cardinality, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};

use super::descriptors::{
    is_closed, is_integer_varint, kind_name, real_oneof, relative_name, same_wire_group,
};
use crate::compat::Incompatibility;

#[derive(Default)]
pub(super) struct Checker {
    /// Message pairs (writer, reader) already compared or being compared.
    pub(super) visited: HashSet<(String, String)>,
    pub(super) found: Vec<Incompatibility>,
}

impl Checker {
    fn report(&mut self, path: &str, message: impl Into<String>) {
        self.found.push(Incompatibility::new(path, message));
    }

    pub(super) fn check_files(&mut self, writer: &FileDescriptor, reader: &FileDescriptor) {
        let writer_package = writer.package_name();
        let reader_package = reader.package_name();
        if writer_package != reader_package {
            self.report(
                "",
                format!(
                    "package changed from `{writer_package}` to `{reader_package}`: every message \
                     has a new full name, so none of the writer's messages is found by name"
                ),
            );
        }
        let reader_messages: HashMap<String, MessageDescriptor> = reader
            .messages()
            .map(|m| (relative_name(m.full_name(), reader_package).to_owned(), m))
            .collect();
        for message in writer.messages() {
            let name = relative_name(message.full_name(), writer_package);
            match reader_messages.get(name) {
                Some(target) => self.check_message(&message, target, name),
                None if writer_package == reader_package => self.report(
                    name,
                    format!(
                        "message `{}` is missing from the reader: data of this type cannot be \
                         decoded (a removed or renamed top-level message)",
                        message.full_name()
                    ),
                ),
                // Already reported as a package change; no message of that name at all.
                None => self.report(
                    name,
                    format!(
                        "message `{name}` is missing from the reader's package `{reader_package}`"
                    ),
                ),
            }
        }
    }

    fn check_message(
        &mut self,
        writer: &MessageDescriptor,
        reader: &MessageDescriptor,
        path: &str,
    ) {
        if !self
            .visited
            .insert((writer.full_name().to_owned(), reader.full_name().to_owned()))
        {
            return;
        }
        for field in writer.fields() {
            if let Some(target) = reader.get_field(field.number()) {
                let field_path = format!("{path}.{}", target.name());
                self.check_field(&field, &target, &field_path);
            }
        }
        for field in reader.fields() {
            if field.cardinality() != Cardinality::Required {
                continue;
            }
            let guaranteed = writer
                .get_field(field.number())
                .is_some_and(|w| w.cardinality() == Cardinality::Required);
            if !guaranteed {
                self.report(
                    &format!("{path}.{}", field.name()),
                    format!(
                        "the reader requires field `{}` (number {}), which the writer may omit",
                        field.name(),
                        field.number()
                    ),
                );
            }
        }
        self.check_oneofs(writer, reader, path);
    }

    /// Fields the writer may set together must not share a reader oneof.
    fn check_oneofs(&mut self, writer: &MessageDescriptor, reader: &MessageDescriptor, path: &str) {
        for oneof in reader.oneofs().filter(|o| !o.is_synthetic()) {
            let members: Vec<FieldDescriptor> = oneof
                .fields()
                .filter_map(|f| writer.get_field(f.number()))
                .collect();
            let mut clash = None;
            'pairs: for (i, a) in members.iter().enumerate() {
                for b in &members[i + 1..] {
                    let (oa, ob) = (real_oneof(a), real_oneof(b));
                    if oa.is_none() || oa != ob {
                        clash = Some((a.name().to_owned(), b.name().to_owned()));
                        break 'pairs;
                    }
                }
            }
            if let Some((a, b)) = clash {
                self.report(
                    &format!("{path}.{}", oneof.name()),
                    format!(
                        "the writer may set both `{a}` and `{b}`, which the reader's oneof `{}` \
                         holds together: only the last one read would survive",
                        oneof.name()
                    ),
                );
            }
        }
    }

    fn check_field(&mut self, writer: &FieldDescriptor, reader: &FieldDescriptor, path: &str) {
        // Map fields are repeated entries too (`is_list` is false for them).
        let repeated = |f: &FieldDescriptor| f.cardinality() == Cardinality::Repeated;
        if repeated(writer) && !repeated(reader) {
            self.report(
                path,
                "repeated in the writer but singular in the reader: a singular reader keeps only \
                 the last element (merges messages) and cannot read packed elements",
            );
            return;
        }
        if writer.is_group() != reader.is_group() {
            self.report(
                path,
                "changed between a group and a message field, which have different wire encodings",
            );
            return;
        }
        let (w, r) = (writer.kind(), reader.kind());
        match (&w, &r) {
            (Kind::Message(wm), Kind::Message(rm)) => self.check_message(wm, rm, path),
            (Kind::Enum(we), Kind::Enum(re)) => {
                if is_closed(re) {
                    let missing: Vec<String> = we
                        .values()
                        .filter(|v| re.get_value(v.number()).is_none())
                        .map(|v| format!("`{}` ({})", v.name(), v.number()))
                        .collect();
                    if !missing.is_empty() {
                        self.report(
                            path,
                            format!(
                                "the writer's enum values {} are unknown to the reader's closed \
                                 enum `{}`; the field would read as unset",
                                missing.join(", "),
                                re.full_name()
                            ),
                        );
                    }
                }
            }
            (Kind::Enum(_), r) if is_integer_varint(r) => {}
            (w, Kind::Enum(re)) if is_integer_varint(w) => {
                if is_closed(re) {
                    self.report(
                        path,
                        format!(
                            "an integer written as {} may hold numbers the reader's closed enum \
                             `{}` does not declare",
                            kind_name(w),
                            re.full_name()
                        ),
                    );
                }
            }
            (Kind::String, Kind::Bytes) => {}
            (Kind::Bytes, Kind::String) => self.report(
                path,
                "bytes written, string read: the writer may send bytes that are not valid UTF-8",
            ),
            (Kind::Message(_), Kind::Bytes | Kind::String)
            | (Kind::Bytes | Kind::String, Kind::Message(_)) => self.report(
                path,
                format!(
                    "type changed from {} to {}: both are length-delimited, but the reader would \
                     get a message's raw encoding or decode arbitrary bytes as a message",
                    kind_name(&w),
                    kind_name(&r)
                ),
            ),
            (w, r) if same_wire_group(w, r) => {}
            (w, r) => self.report(
                path,
                format!(
                    "type changed from {} to {}, which is not wire compatible",
                    kind_name(w),
                    kind_name(r)
                ),
            ),
        }
    }
}
