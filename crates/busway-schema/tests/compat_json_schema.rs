#![allow(clippy::unwrap_used, clippy::expect_used)]
//! JSON Schema evolution under every compatibility mode.
//!
//! Each row is an evolution from `before` (version 1) to `after` (the candidate) and the verdict
//! of every mode, in the order of `CompatibilityMode::ALL`:
//! NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE.
//! The rule behind every verdict is busway's (see `compat::json_schema`): data written with
//! schema W can be read with schema R when every instance valid under W is valid under R.
//! BACKWARD asks it with W = before, R = after; FORWARD with W = after, R = before.
//! JSON Schema has no defaults that fill gaps and no aliases, so the content model (open:
//! no `additionalProperties`; closed: `additionalProperties: false`; partially open:
//! `additionalProperties` with a schema) decides most verdicts.

#[path = "common/compat.rs"]
mod common_compat;

use busway_schema::compat;
use busway_schema::{CompatibilityMode, Schema};
use common_compat::{Evolution, NO, OK, assert_invalid, check_history};
use serde_json::{Value, json};

/// An order object with the given properties, `required`, and content model.
fn order(properties: Value, required: &[&str], additional: Option<Value>) -> Value {
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
    });
    if let (Some(additional), Value::Object(map)) = (additional, &mut schema) {
        map.insert("additionalProperties".into(), additional);
    }
    schema
}

fn v1_properties() -> Value {
    json!({
        "id": {"type": "integer"},
        "amount": {"type": "integer"},
        "status": {"enum": ["NEW", "PAID"]}
    })
}

fn with(properties: Value, name: &str, schema: Value) -> Value {
    let mut properties = properties;
    if let Value::Object(map) = &mut properties {
        map.insert(name.into(), schema);
    }
    properties
}

fn without(properties: Value, name: &str) -> Value {
    let mut properties = properties;
    if let Value::Object(map) = &mut properties {
        map.remove(name);
    }
    properties
}

/// v1 with `amount` renamed to `total` (JSON Schema has no aliases).
fn renamed(additional: Option<Value>) -> Value {
    order(
        with(
            without(v1_properties(), "amount"),
            "total",
            json!({"type": "integer"}),
        ),
        &["id"],
        additional,
    )
}

const CLOSED: Option<Value> = Some(Value::Bool(false));
const OPEN: Option<Value> = None;

fn evolutions() -> Vec<Evolution<Value>> {
    let string = json!({"type": "string"});
    let closed_v1 = order(v1_properties(), &["id"], CLOSED);
    let open_v1 = order(v1_properties(), &["id"], OPEN);
    vec![
        Evolution {
            // The analogue of "add a field with a default": an optional property. Old closed
            // writers never send `note`; old closed readers reject it.
            name: "add an optional property, closed model",
            before: closed_v1.clone(),
            after: order(
                with(v1_properties(), "note", string.clone()),
                &["id"],
                CLOSED,
            ),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "note",
        },
        Evolution {
            // Old open writers may send `note` with any value, which the new `string` rejects;
            // old open readers accept anything as `note`.
            name: "add an optional property, open model",
            before: open_v1.clone(),
            after: order(with(v1_properties(), "note", string.clone()), &["id"], OPEN),
            expect: [OK, NO, NO, OK, OK, NO, NO],
            path: "note",
        },
        Evolution {
            // Undeclared properties must be strings on both sides, so a string `note` is
            // within both contracts.
            name: "add an optional property, partially open model",
            before: order(v1_properties(), &["id"], Some(string.clone())),
            after: order(
                with(v1_properties(), "note", string.clone()),
                &["id"],
                Some(string.clone()),
            ),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // New readers require `note`, which old writers omit; old closed readers reject it.
            name: "add a required property, closed model",
            before: closed_v1.clone(),
            after: order(
                with(v1_properties(), "note", string.clone()),
                &["id", "note"],
                CLOSED,
            ),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "note",
        },
        Evolution {
            // Old open readers accept the extra property; new readers still require it.
            name: "add a required property, open model",
            before: open_v1.clone(),
            after: order(
                with(v1_properties(), "note", string.clone()),
                &["id", "note"],
                OPEN,
            ),
            expect: [OK, NO, NO, OK, OK, NO, NO],
            path: "note",
        },
        Evolution {
            // New closed readers reject the `amount` old writers send; new writers never send
            // it, which old readers (for whom it is optional) accept.
            name: "remove a property, closed model",
            before: closed_v1.clone(),
            after: order(without(v1_properties(), "amount"), &["id"], CLOSED),
            expect: [OK, NO, NO, OK, OK, NO, NO],
            path: "amount",
        },
        Evolution {
            // New open readers accept any `amount`; new open writers may send `amount` with
            // any value, which old readers constrain to integers.
            name: "remove a property, open model",
            before: open_v1.clone(),
            after: order(without(v1_properties(), "amount"), &["id"], OPEN),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "amount",
        },
        Evolution {
            // No aliases in JSON Schema: a rename removes `amount` and adds `total`, which
            // breaks both directions under a closed model ...
            name: "rename a property, closed model",
            before: closed_v1.clone(),
            after: renamed(CLOSED),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "",
        },
        Evolution {
            // ... and under an open one (each side may send the other's name with any value).
            name: "rename a property, open model",
            before: open_v1.clone(),
            after: renamed(OPEN),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "",
        },
        Evolution {
            // Every integer is a number; not every number is an integer.
            name: "widen integer to number",
            before: closed_v1.clone(),
            after: order(
                with(v1_properties(), "amount", json!({"type": "number"})),
                &["id"],
                CLOSED,
            ),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "amount",
        },
        Evolution {
            // Integers and strings do not overlap.
            name: "change integer to string",
            before: closed_v1.clone(),
            after: order(
                with(v1_properties(), "amount", string.clone()),
                &["id"],
                CLOSED,
            ),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "amount",
        },
        Evolution {
            // The new enum accepts every old value; old readers reject SHIPPED.
            name: "add an enum value",
            before: closed_v1.clone(),
            after: order(
                with(
                    v1_properties(),
                    "status",
                    json!({"enum": ["NEW", "PAID", "SHIPPED"]}),
                ),
                &["id"],
                CLOSED,
            ),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "status",
        },
        Evolution {
            // Tightening on the reader side: new readers reject negative amounts old writers
            // may send; old readers accept everything the new writers send.
            name: "add a minimum",
            before: closed_v1.clone(),
            after: order(
                with(
                    v1_properties(),
                    "amount",
                    json!({"type": "integer", "minimum": 0}),
                ),
                &["id"],
                CLOSED,
            ),
            expect: [OK, NO, NO, OK, OK, NO, NO],
            path: "amount",
        },
    ]
}

#[test]
fn classic_evolutions_under_every_mode() {
    for evolution in evolutions() {
        for (mode, report) in evolution.check(|s| Schema::json(s.to_string())) {
            // These evolutions are all decidable: nothing may be left unproven.
            assert!(
                report
                    .violations
                    .iter()
                    .all(|v| !v.message.starts_with("cannot prove")),
                "{} under {mode}: {:?}",
                evolution.name,
                report.violations
            );
        }
    }
}

#[test]
fn transitive_modes_check_every_earlier_version() {
    // Version 2 dropped `legacy` while the subject's mode was NONE; the candidate brings it
    // back with another type. Against version 2 (which never sends `legacy`) that is backward
    // compatible; against version 1 (which sends it as a string) it is not.
    let legacy = |t: &str| json!({"type": t});
    let v1 = order(
        with(
            json!({"id": {"type": "integer"}}),
            "legacy",
            legacy("string"),
        ),
        &["id"],
        CLOSED,
    );
    let v2 = order(json!({"id": {"type": "integer"}}), &["id"], CLOSED);
    let v3 = order(
        with(
            json!({"id": {"type": "integer"}}),
            "legacy",
            legacy("integer"),
        ),
        &["id"],
        CLOSED,
    );
    let history = [
        (1, Schema::json(v1.to_string())),
        (2, Schema::json(v2.to_string())),
    ];
    let candidate = Schema::json(v3.to_string());
    // Forward fails against version 2 already: its closed readers reject `legacy`.
    let expect = [OK, OK, NO, NO, NO, NO, NO];
    check_history(&candidate, &history, expect);
    let report =
        compat::check(CompatibilityMode::BackwardTransitive, &candidate, &history).unwrap();
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    assert_eq!(report.violations[0].version, Some(1));
    assert_eq!(report.violations[0].path, "legacy");
}

#[test]
fn nested_objects_arrays_and_refs() {
    let v1 = json!({
        "$defs": {"Line": {"type": "object", "properties": {
            "sku": {"type": "string"}, "qty": {"type": "integer"}}, "required": ["sku"]}},
        "type": "object",
        "properties": {"lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}}}
    });
    let v2 = json!({
        "$defs": {"Line": {"type": "object", "properties": {
            "sku": {"type": "string", "maxLength": 8}, "qty": {"type": "number"}}, "required": ["sku"]}},
        "type": "object",
        "properties": {"lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}}}
    });
    let found =
        compat::can_read(&Schema::json(v2.to_string()), &Schema::json(v1.to_string())).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "lines[].sku");
    assert!(
        found[0].message.contains("at most 8"),
        "{}",
        found[0].message
    );
    let found =
        compat::can_read(&Schema::json(v1.to_string()), &Schema::json(v2.to_string())).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "lines[].qty");
}

#[test]
fn undecidable_changes_are_reported_not_accepted() {
    let before = Schema::json(r#"{"type":"string","pattern":"^[A-Z]{3}$"}"#);
    let after = Schema::json(r#"{"type":"string","pattern":"^[A-Z]{2,3}$"}"#);
    let report = compat::check(CompatibilityMode::Backward, &after, &[(1, before)]).unwrap();
    assert!(!report.is_compatible());
    assert!(
        report.violations[0].message.starts_with("cannot prove"),
        "{:?}",
        report.violations
    );
}

#[test]
fn invalid_documents_are_errors() {
    let valid = Schema::json(r#"{"type":"object"}"#);
    assert_invalid(
        CompatibilityMode::Full,
        |s| Schema::json(s),
        &[
            r#"{"type":"objectt"}"#,
            r##"{"properties":{"a":{"$ref":"#/$defs/Nope"}}}"##,
            r#"{"required":"id"}"#,
        ],
        &valid,
    );
}
