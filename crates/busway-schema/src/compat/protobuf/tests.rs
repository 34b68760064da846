//! Unit tests of the Protobuf wire rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::schema::SchemaFormat;

fn proto3(body: &str) -> String {
    format!("syntax = \"proto3\";\npackage shop;\n{body}")
}

fn proto2(body: &str) -> String {
    format!("syntax = \"proto2\";\npackage shop;\n{body}")
}

fn violations(reader: &str, writer: &str) -> Vec<Incompatibility> {
    can_read(&Schema::protobuf(reader), &Schema::protobuf(writer)).unwrap()
}

fn compatible(reader: &str, writer: &str) -> bool {
    violations(reader, writer).is_empty()
}

fn field(ty: &str) -> String {
    proto3(&format!("message Order {{ {ty} value = 1; }}"))
}

#[test]
fn scalar_wire_groups() {
    let scalars = [
        "int32", "int64", "uint32", "uint64", "bool", "sint32", "sint64", "fixed32", "sfixed32",
        "fixed64", "sfixed64", "float", "double", "string", "bytes",
    ];
    fn group(t: &str) -> &str {
        match t {
            "int32" | "int64" | "uint32" | "uint64" | "bool" => "varint",
            "sint32" | "sint64" => "zigzag",
            "fixed32" | "sfixed32" => "fixed32",
            "fixed64" | "sfixed64" => "fixed64",
            other => other,
        }
    }
    for writer in scalars {
        for reader in scalars {
            let expected =
                group(writer) == group(reader) || (writer == "string" && reader == "bytes");
            assert_eq!(
                compatible(&field(reader), &field(writer)),
                expected,
                "writer {writer}, reader {reader}"
            );
        }
    }
}

#[test]
fn violation_names_the_field_path() {
    let found = violations(
        &proto3("message Order { Customer customer = 1; } message Customer { int64 id = 1; }"),
        &proto3("message Order { Customer customer = 1; } message Customer { string id = 1; }"),
    );
    // `Customer` is also a top-level message; the pair is compared (and reported) once.
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "Order.customer.id");
}

#[test]
fn unknown_and_missing_fields() {
    let v1 = proto3("message Order { int64 id = 1; }");
    let v2 = proto3("message Order { int64 id = 1; string note = 2; }");
    assert!(compatible(&v1, &v2), "unknown writer fields are skipped");
    assert!(compatible(&v2, &v1), "missing fields read as defaults");
}

#[test]
fn rename_keeping_the_number_is_wire_compatible() {
    let v1 = proto3("message Order { int64 amount = 1; }");
    let v2 = proto3("message Order { int64 total = 1; }");
    assert!(compatible(&v2, &v1));
    assert!(compatible(&v1, &v2));
}

#[test]
fn enums_open_and_closed() {
    let open = |values: &str| {
        proto3(&format!(
            "enum Status {{ {values} }} message Order {{ Status status = 1; }}"
        ))
    };
    let closed = |values: &str| {
        proto2(&format!(
            "enum Status {{ {values} }} message Order {{ optional Status status = 1; }}"
        ))
    };
    let small = "NEW = 0; PAID = 1;";
    let large = "NEW = 0; PAID = 1; SHIPPED = 2;";
    assert!(
        compatible(&open(small), &open(large)),
        "open enums keep unknown numbers"
    );
    assert!(compatible(&closed(large), &closed(small)));
    let found = violations(&closed(small), &closed(large));
    assert_eq!(found.len(), 1);
    assert!(found[0].message.contains("SHIPPED"), "{}", found[0].message);
    // Enum <-> integer.
    let int = proto3("message Order { int32 status = 1; }");
    let int2 = proto2("message Order { optional int32 status = 1; }");
    assert!(compatible(&int, &open(small)));
    assert!(compatible(&open(small), &int));
    assert!(!compatible(&closed(large), &int2));
    assert!(
        !compatible(&field("sint32"), &open(small)),
        "enums are not zigzag"
    );
}

#[test]
fn message_and_bytes_do_not_mix() {
    let msg = proto3("message Order { Inner value = 1; } message Inner { int32 a = 1; }");
    assert!(!compatible(&field("bytes"), &msg));
    assert!(!compatible(&msg, &field("bytes")));
    assert!(!compatible(&msg, &field("string")));
}

#[test]
fn cardinality() {
    for ty in ["int32", "string", "bytes", "Inner"] {
        let single = proto3(&format!(
            "message Order {{ {ty} value = 1; }} message Inner {{ int32 a = 1; }}"
        ));
        let repeated = proto3(&format!(
            "message Order {{ repeated {ty} value = 1; }} message Inner {{ int32 a = 1; }}"
        ));
        assert!(
            compatible(&repeated, &single),
            "{ty}: singular read as repeated"
        );
        assert!(
            !compatible(&single, &repeated),
            "{ty}: repeated read as singular"
        );
    }
    // proto3 `optional` is presence, not cardinality.
    let optional = proto3("message Order { optional int32 value = 1; }");
    assert!(compatible(&optional, &field("int32")));
    assert!(compatible(&field("int32"), &optional));
}

#[test]
fn maps_compare_their_entries() {
    let m = |v: &str| proto3(&format!("message Order {{ map<string, {v}> value = 1; }}"));
    assert!(compatible(&m("int64"), &m("int32")));
    assert!(!compatible(&m("string"), &m("int32")));
    let entries = proto3(
        "message Order { message Entry { string key = 1; int64 value = 2; } \
         repeated Entry value = 1; }",
    );
    assert!(
        compatible(&entries, &m("int64")),
        "a map is repeated entries"
    );
    assert!(compatible(&m("int64"), &entries));
    let single_entry = proto3(
        "message Order { message Entry { string key = 1; int64 value = 2; } Entry value = 1; }",
    );
    assert!(compatible(&m("int64"), &single_entry));
    assert!(!compatible(&single_entry, &m("int64")));
}

#[test]
fn required_fields() {
    let optional = proto2("message Order { optional int64 id = 1; }");
    let required = proto2("message Order { required int64 id = 1; }");
    let absent = proto2("message Order { optional string other = 2; }");
    assert!(compatible(&optional, &required));
    assert!(!compatible(&required, &optional));
    assert!(!compatible(&required, &absent));
    assert!(compatible(&required, &required));
}

#[test]
fn oneofs() {
    let independent = proto3("message Order { string card = 1; string iban = 2; }");
    let one_moved = proto3("message Order { oneof pay { string card = 1; } string iban = 2; }");
    let both = proto3("message Order { oneof pay { string card = 1; string iban = 2; } }");
    assert!(
        compatible(&one_moved, &independent),
        "a single field into a new oneof"
    );
    let found = violations(&both, &independent);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "Order.pay");
    assert!(
        !compatible(&both, &one_moved),
        "a field into an existing oneof"
    );
    assert!(compatible(&independent, &both), "out of a oneof");
    assert!(compatible(&both, &both));
    // proto3 optional fields have synthetic oneofs, which are not oneofs.
    let optionals = proto3("message Order { optional string card = 1; optional string iban = 2; }");
    assert!(compatible(&optionals, &independent));
}

#[test]
fn messages_matched_by_full_name() {
    let v1 = proto3("message Order { int64 id = 1; }");
    let renamed = proto3("message Purchase { int64 id = 1; }");
    let found = violations(&renamed, &v1);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "Order");
    // A new top-level message can be a payload that old readers cannot decode.
    let added = proto3("message Order { int64 id = 1; } message Refund { int64 id = 1; }");
    let found = violations(&v1, &added);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "Refund");
    assert!(compatible(&added, &v1));
    let other_package = "syntax = \"proto3\";\npackage billing;\nmessage Order { int64 id = 1; }";
    let found = violations(other_package, &v1);
    assert!(found.iter().any(|v| v.message.contains("package changed")));
}

#[test]
fn nested_types_compared_by_structure() {
    let v1 = proto3("message Order { message Line { int32 qty = 1; } repeated Line lines = 1; }");
    let v2 = proto3("message Order { message Item { int64 qty = 1; } repeated Item lines = 1; }");
    assert!(
        compatible(&v2, &v1),
        "names of nested types are not on the wire"
    );
    assert!(compatible(&v1, &v2));
    let v3 = proto3("message Order { message Item { string qty = 1; } repeated Item lines = 1; }");
    let found = violations(&v3, &v1);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "Order.lines.qty");
}

#[test]
fn recursive_messages_terminate() {
    let tree = |t: &str| {
        proto3(&format!(
            "message Node {{ {t} value = 1; repeated Node children = 2; }}"
        ))
    };
    assert!(compatible(&tree("int64"), &tree("int32")));
    let found = violations(&tree("string"), &tree("int32"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "Node.value");
}

#[test]
fn removed_numbers_must_be_reserved() {
    let v1 = proto3("message Order { int64 id = 1; string note = 2; }");
    let removed = proto3("message Order { int64 id = 1; }");
    let reserved = proto3("message Order { int64 id = 1; reserved 2; }");
    let found = evolution(&Schema::protobuf(removed), &Schema::protobuf(&v1)).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "Order.note");
    assert!(
        evolution(&Schema::protobuf(reserved), &Schema::protobuf(&v1))
            .unwrap()
            .is_empty()
    );
    let e1 = proto3("enum S { A = 0; B = 1; C = 2; } message M { S s = 1; }");
    let e2 = proto3("enum S { A = 0; B = 1; } message M { S s = 1; }");
    let e3 = proto3("enum S { A = 0; B = 1; reserved 2; } message M { S s = 1; }");
    let found = evolution(&Schema::protobuf(e2), &Schema::protobuf(&e1)).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "S.C");
    assert!(
        evolution(&Schema::protobuf(e3), &Schema::protobuf(e1))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn well_known_imports_compile_and_others_do_not() {
    let with_timestamp = "syntax = \"proto3\";\nimport \"google/protobuf/timestamp.proto\";\n\
        message Order { google.protobuf.Timestamp at = 1; }";
    assert!(compatible(with_timestamp, with_timestamp));
    let err = can_read(
        &Schema::protobuf("syntax = \"proto3\";\nimport \"other.proto\";\nmessage A {}"),
        &Schema::protobuf(proto3("message A {}")),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        SchemaError::InvalidSchema {
            format: SchemaFormat::Protobuf,
            ..
        }
    ));
    let err = can_read(
        &Schema::protobuf("message {"),
        &Schema::protobuf(proto3("message A {}")),
    )
    .unwrap_err();
    assert!(matches!(err, SchemaError::InvalidSchema { .. }));
}
