#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Protobuf schema evolution under every compatibility mode.
//!
//! Each row is an evolution from `before` (version 1) to `after` (the candidate) and the verdict
//! of every mode, in the order of `CompatibilityMode::ALL`:
//! NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE.
//! BACKWARD asks whether `after` decodes bytes written with `before`, FORWARD the reverse. The
//! verdicts follow the binary wire format as the protobuf language guide's "updating a message
//! type" section describes it, plus buf's rule that a removed field number must be reserved
//! (checked under every mode but NONE), as `compat::protobuf` documents.

#[path = "common/compat.rs"]
mod common_compat;

use busway_schema::compat::{self, Direction};
use busway_schema::{CompatibilityMode, Schema};
use common_compat::{Evolution, NO, OK, assert_invalid, check_history};

fn proto3(body: &str) -> String {
    format!("syntax = \"proto3\";\npackage shop;\n{body}\n")
}

fn proto2(body: &str) -> String {
    format!("syntax = \"proto2\";\npackage shop;\n{body}\n")
}

const STATUS: &str = "enum Status { NEW = 0; PAID = 1; }";
const STATUS_MORE: &str = "enum Status { NEW = 0; PAID = 1; SHIPPED = 2; }";

fn order(fields: &str, status: &str) -> String {
    proto3(&format!("{status}\nmessage Order {{ {fields} }}"))
}

const V1_FIELDS: &str = "int64 id = 1; int32 amount = 2; Status status = 3;";

fn evolutions() -> Vec<Evolution<String>> {
    let v1 = order(V1_FIELDS, STATUS);
    vec![
        Evolution {
            // The analogue of "add a field with a default": a new field number. Old readers
            // skip it as an unknown field; new readers see its default in old data.
            name: "add a field",
            before: v1.clone(),
            after: order(&format!("{V1_FIELDS} string note = 4;"), STATUS),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // proto2 `required`: new readers reject old messages without `note`; old readers
            // skip it.
            name: "add a required field (proto2)",
            before: proto2("message Order { required int64 id = 1; }"),
            after: proto2("message Order { required int64 id = 1; required string note = 4; }"),
            expect: [OK, NO, NO, OK, OK, NO, NO],
            path: "Order.note",
        },
        Evolution {
            // Removing a required field: old readers reject new messages.
            name: "remove a required field (proto2)",
            before: proto2("message Order { required int64 id = 1; required string note = 4; }"),
            after: proto2("message Order { required int64 id = 1; reserved 4; }"),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "Order.note",
        },
        Evolution {
            // Wire compatible both ways, but the number is free for reuse: buf's
            // FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED, checked under every mode but NONE.
            name: "remove a field without reserving its number",
            before: v1.clone(),
            after: order("int64 id = 1; Status status = 3;", STATUS),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "Order.amount",
        },
        Evolution {
            name: "remove a field, reserving its number",
            before: v1.clone(),
            after: order("int64 id = 1; Status status = 3; reserved 2;", STATUS),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // No aliases in Protobuf, and none needed: names are not on the wire.
            name: "rename a field, keeping its number",
            before: v1.clone(),
            after: order("int64 id = 1; int32 total = 2; Status status = 3;", STATUS),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // int32, int64, uint32, uint64 and bool are all varints: compatible both ways
            // (out-of-range values are truncated, as protobuf defines).
            name: "widen int32 to int64",
            before: v1.clone(),
            after: order("int64 id = 1; int64 amount = 2; Status status = 3;", STATUS),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // string reads bytes written as string; bytes written may not be valid UTF-8.
            name: "change string to bytes",
            before: order("string ref = 1;", STATUS),
            after: order("bytes ref = 1;", STATUS),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "Order.ref",
        },
        Evolution {
            // A varint cannot be read as a length-delimited string, nor the reverse.
            name: "change int32 to string",
            before: v1.clone(),
            after: order(
                "int64 id = 1; string amount = 2; Status status = 3;",
                STATUS,
            ),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "Order.amount",
        },
        Evolution {
            // A varint cannot be read as a zigzag varint: the numbers would change.
            name: "change int32 to sint32",
            before: v1.clone(),
            after: order(
                "int64 id = 1; sint32 amount = 2; Status status = 3;",
                STATUS,
            ),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "Order.amount",
        },
        Evolution {
            // proto3 enums are open: old readers keep SHIPPED as the number 2.
            name: "add an enum value (proto3, open enum)",
            before: v1.clone(),
            after: order(V1_FIELDS, STATUS_MORE),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // proto2 enums are closed: old readers drop SHIPPED into the unknown fields.
            name: "add an enum value (proto2, closed enum)",
            before: proto2(&format!(
                "{STATUS}\nmessage Order {{ optional Status status = 3; }}"
            )),
            after: proto2(&format!(
                "{STATUS_MORE}\nmessage Order {{ optional Status status = 3; }}"
            )),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "Order.status",
        },
        Evolution {
            // Singular to repeated: one element is a valid list. Repeated to singular loses
            // elements.
            name: "make a field repeated",
            before: order("string tag = 5;", STATUS),
            after: order("repeated string tag = 5;", STATUS),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "Order.tag",
        },
        Evolution {
            // Two independent fields into one oneof: old writers may set both.
            name: "move two fields into a oneof",
            before: order("string card = 6; string iban = 7;", STATUS),
            after: order(
                "oneof payment { string card = 6; string iban = 7; }",
                STATUS,
            ),
            expect: [OK, NO, NO, OK, OK, NO, NO],
            path: "Order.payment",
        },
        Evolution {
            // Every full name changes: readers look the message up by name.
            name: "change the package",
            before: v1.clone(),
            after: format!(
                "syntax = \"proto3\";\npackage billing;\n{STATUS}\nmessage Order {{ {V1_FIELDS} }}\n"
            ),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "",
        },
        Evolution {
            // A renamed top-level message is a removed one for readers.
            name: "rename a message",
            before: v1.clone(),
            after: proto3(&format!("{STATUS}\nmessage Purchase {{ {V1_FIELDS} }}")),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "",
        },
    ]
}

#[test]
fn classic_evolutions_under_every_mode() {
    for evolution in evolutions() {
        evolution.check(|s| Schema::protobuf(s));
    }
}

#[test]
fn unreserved_removal_is_reported_without_a_direction() {
    let before = Schema::protobuf(order(V1_FIELDS, STATUS));
    let after = Schema::protobuf(order("int64 id = 1; Status status = 3;", STATUS));
    let report = compat::check(CompatibilityMode::Forward, &after, &[(1, before)]).unwrap();
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    let violation = &report.violations[0];
    assert_eq!(violation.direction, None);
    assert_eq!(violation.version, Some(1));
    assert!(
        violation.message.contains("reserved 2"),
        "{}",
        violation.message
    );
}

#[test]
fn transitive_modes_check_every_earlier_version() {
    // v2 removes `note` and reserves 2 (compatible); v3 drops the reservation and reuses 2 as
    // an int64. Against v2, which never writes 2, all is well; against v1, whose `note` is a
    // string, the number now means something else, in both directions.
    let v1 = Schema::protobuf(proto3("message Order { int64 id = 1; string note = 2; }"));
    let v2 = Schema::protobuf(proto3("message Order { int64 id = 1; reserved 2; }"));
    let v3 = Schema::protobuf(proto3("message Order { int64 id = 1; int64 count = 2; }"));
    // The history itself is fully compatible.
    assert!(
        compat::check(CompatibilityMode::FullTransitive, &v2, &[(1, v1.clone())])
            .unwrap()
            .is_compatible()
    );
    let history = [(1, v1), (2, v2)];
    let expect = [OK, OK, NO, OK, NO, OK, NO];
    check_history(&v3, &history, expect);
    let report = compat::check(CompatibilityMode::FullTransitive, &v3, &history).unwrap();
    let mut seen: Vec<(Option<Direction>, Option<u32>, &str)> = report
        .violations
        .iter()
        .map(|v| (v.direction, v.version, v.path.as_str()))
        .collect();
    seen.sort_by_key(|(d, _, _)| matches!(d, Some(Direction::Forward)));
    assert_eq!(
        seen,
        [
            (Some(Direction::Backward), Some(1), "Order.count"),
            (Some(Direction::Forward), Some(1), "Order.note"),
        ]
    );
}

#[test]
fn invalid_proto_is_an_error() {
    let valid = Schema::protobuf(proto3("message Order { int64 id = 1; }"));
    assert_invalid(
        CompatibilityMode::Backward,
        |s| Schema::protobuf(s),
        &[
            "syntax = \"proto3\"; message Order { int64 id = 1",
            "syntax = \"proto3\"; message Order { Unknown thing = 1; }",
            "syntax = \"proto3\"; message Order { int64 a = 1; int64 b = 1; }",
        ],
        &valid,
    );
}
