//! Reading descriptors: names, every message and enum, and how fields travel on the wire.

use prost_reflect::{
    EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, Syntax,
};

/// A full name without its package prefix.
pub(super) fn relative_name<'a>(full_name: &'a str, package: &str) -> &'a str {
    if package.is_empty() {
        full_name
    } else {
        full_name
            .strip_prefix(package)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(full_name)
    }
}

/// Every message of a file, nested ones included.
pub(super) fn all_messages(file: &FileDescriptor) -> Vec<MessageDescriptor> {
    fn walk(message: MessageDescriptor, out: &mut Vec<MessageDescriptor>) {
        for child in message.child_messages() {
            walk(child, out);
        }
        out.push(message);
    }
    let mut out = Vec::new();
    for message in file.messages() {
        walk(message, &mut out);
    }
    out
}

/// Every enum of a file, nested ones included.
pub(super) fn all_enums(file: &FileDescriptor) -> Vec<EnumDescriptor> {
    let mut out: Vec<EnumDescriptor> = file.enums().collect();
    for message in all_messages(file) {
        out.extend(message.child_enums());
    }
    out
}

/// Closed enums (proto2) drop numbers they do not declare; open ones (proto3) keep them.
pub(super) fn is_closed(e: &EnumDescriptor) -> bool {
    e.parent_file().syntax() == Syntax::Proto2
}

/// The real (not synthetic) oneof a field belongs to.
pub(super) fn real_oneof(field: &FieldDescriptor) -> Option<String> {
    field
        .containing_oneof()
        .filter(|oneof| !oneof.is_synthetic())
        .map(|oneof| oneof.full_name().to_owned())
}

pub(super) fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => format!("message `{}`", m.full_name()),
        Kind::Enum(e) => format!("enum `{}`", e.full_name()),
    }
}

/// Scalar kinds that share an encoding, so one reads what the other wrote.
pub(super) fn same_wire_group(writer: &Kind, reader: &Kind) -> bool {
    use Kind as K;
    let group = |kind: &Kind| match kind {
        K::Int32 | K::Int64 | K::Uint32 | K::Uint64 | K::Bool => Some(0),
        K::Sint32 | K::Sint64 => Some(1),
        K::Fixed32 | K::Sfixed32 => Some(2),
        K::Fixed64 | K::Sfixed64 => Some(3),
        K::Float => Some(4),
        K::Double => Some(5),
        K::String => Some(6),
        K::Bytes => Some(7),
        K::Message(_) | K::Enum(_) => None,
    };
    matches!((group(writer), group(reader)), (Some(w), Some(r)) if w == r)
}

pub(super) fn is_integer_varint(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64
    )
}
