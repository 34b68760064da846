#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Avro schema evolution under every compatibility mode.
//!
//! Each row is an evolution from `before` (version 1) to `after` (the candidate) and the verdict
//! of every mode, in the order of `CompatibilityMode::ALL`:
//! NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE.
//! BACKWARD asks whether `after` reads data written with `before`, FORWARD the reverse, FULL
//! both; with a single earlier version the transitive modes agree with their plain variants.
//! The expected verdicts follow the schema resolution rules of the Avro specification, cited
//! per row.

#[path = "common/compat.rs"]
mod common_compat;

use busway_schema::compat::{self, Direction};
use busway_schema::{CompatibilityMode, Schema};
use common_compat::{Evolution, NO, OK, check_history};

fn order(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Order","namespace":"shop","fields":[{fields}]}}"#)
}

const ID: &str = r#"{"name":"id","type":"long"}"#;
const AMOUNT: &str = r#"{"name":"amount","type":"int"}"#;

fn status(symbols: &str, default: &str) -> String {
    format!(
        r#"{{"name":"status","type":{{"type":"enum","name":"Status","symbols":[{symbols}]{default}}}}}"#
    )
}

fn evolutions() -> Vec<Evolution<String>> {
    let v1 = order(&format!("{ID},{AMOUNT}"));
    vec![
        Evolution {
            // Reader field missing in the writer takes its default; writer fields unknown to
            // the reader are skipped.
            name: "add a field with a default",
            before: v1.clone(),
            after: order(&format!(
                r#"{ID},{AMOUNT},{{"name":"note","type":"string","default":""}}"#
            )),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // A reader field missing in the writer without a default is an error.
            name: "add a field without a default",
            before: v1.clone(),
            after: order(&format!(
                r#"{ID},{AMOUNT},{{"name":"note","type":"string"}}"#
            )),
            expect: [OK, NO, NO, OK, OK, NO, NO],
            path: "Order.note",
        },
        Evolution {
            // New readers skip `amount`; old readers need it and have no default.
            name: "remove a field without a default",
            before: v1.clone(),
            after: order(ID),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "Order.amount",
        },
        Evolution {
            // With a default in the old schema, old readers fill it in.
            name: "remove a field with a default",
            before: order(&format!(
                r#"{ID},{{"name":"amount","type":"int","default":0}}"#
            )),
            after: order(ID),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // Reader field aliases find the writer's field; writer aliases are not used, so an
            // old reader does not find `amount` in new data.
            name: "rename a field through an alias",
            before: v1.clone(),
            after: order(&format!(
                r#"{ID},{{"name":"total","type":"int","aliases":["amount"]}}"#
            )),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "Order.amount",
        },
        Evolution {
            // Without an alias a rename is a removal plus an addition without default.
            name: "rename a field without an alias",
            before: v1.clone(),
            after: order(&format!(r#"{ID},{{"name":"total","type":"int"}}"#)),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "",
        },
        Evolution {
            // int is promotable to long; long is not promotable to int.
            name: "promote int to long",
            before: v1.clone(),
            after: order(&format!(r#"{ID},{{"name":"amount","type":"long"}}"#)),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "Order.amount",
        },
        Evolution {
            // string <-> bytes is a promotion in both directions.
            name: "change string to bytes",
            before: order(r#"{"name":"ref","type":"string"}"#),
            after: order(r#"{"name":"ref","type":"bytes"}"#),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // int and string do not match and neither promotes to the other.
            name: "change int to string",
            before: v1.clone(),
            after: order(&format!(r#"{ID},{{"name":"amount","type":"string"}}"#)),
            expect: [OK, NO, NO, NO, NO, NO, NO],
            path: "Order.amount",
        },
        Evolution {
            // A writer symbol unknown to the reader is an error unless the reader enum has a
            // default: new readers know every old symbol, old readers do not know SHIPPED.
            name: "add an enum symbol",
            before: order(&status(r#""NEW","PAID""#, "")),
            after: order(&status(r#""NEW","PAID","SHIPPED""#, "")),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "Order.status",
        },
        Evolution {
            // ... and with an enum default in the old schema, old readers map SHIPPED to it.
            name: "add an enum symbol, readers have an enum default",
            before: order(&status(r#""NEW","PAID""#, r#","default":"NEW""#)),
            after: order(&status(r#""NEW","PAID","SHIPPED""#, r#","default":"NEW""#)),
            expect: [OK, OK, OK, OK, OK, OK, OK],
            path: "",
        },
        Evolution {
            // Making a field optional: the writer's string matches the reader union's string
            // branch; an old reader cannot read the writer union's null branch.
            name: "make a field nullable",
            before: order(r#"{"name":"note","type":"string"}"#),
            after: order(r#"{"name":"note","type":["null","string"],"default":null}"#),
            expect: [OK, OK, OK, NO, NO, NO, NO],
            path: "Order.note",
        },
    ]
}

#[test]
fn classic_evolutions_under_every_mode() {
    for evolution in evolutions() {
        for (mode, report) in evolution.check(|s| Schema::avro(s)) {
            for violation in &report.violations {
                assert_eq!(violation.version, Some(1));
                let direction = violation
                    .direction
                    .expect("Avro violations are directional");
                assert!(
                    match direction {
                        Direction::Backward => mode.checks_backward(),
                        Direction::Forward => mode.checks_forward(),
                    },
                    "{direction} violation under {mode}"
                );
            }
        }
    }
}

#[test]
fn transitive_modes_check_every_earlier_version() {
    // v2 adds `note` with a default, v3 drops the default. v3 reads v2 data (v2 always writes
    // `note`), but not v1 data (no `note`, and no default to stand in).
    let v1 = Schema::avro(order(ID));
    let v2 = Schema::avro(order(&format!(
        r#"{ID},{{"name":"note","type":"string","default":""}}"#
    )));
    let v3 = Schema::avro(order(&format!(r#"{ID},{{"name":"note","type":"string"}}"#)));
    let history = [(1, v1), (2, v2)];
    // The history itself is fully compatible, so only the candidate decides.
    assert!(
        compat::check(
            CompatibilityMode::FullTransitive,
            &history[1].1,
            &history[..1]
        )
        .unwrap()
        .is_compatible()
    );
    let expect = [OK, OK, NO, OK, OK, OK, NO];
    for (mode, report) in check_history(&v3, &history, expect) {
        if !report.is_compatible() {
            assert!(
                report
                    .violations
                    .iter()
                    .all(|v| v.version == Some(1) && v.path == "Order.note"),
                "{mode}: {:?}",
                report.violations
            );
        }
    }
}

#[test]
fn assert_compatible_lists_every_violation() {
    let v1 = Schema::avro(order(&format!("{ID},{AMOUNT}")));
    let v2 = Schema::avro(order(
        r#"{"name":"id","type":"int"},{"name":"note","type":"string"}"#,
    ));
    let err = compat::assert_compatible(CompatibilityMode::Backward, &v2, &[(1, v1)]).unwrap_err();
    let busway_schema::SchemaError::Incompatible { violations, .. } = err else {
        panic!("expected Incompatible, got {err:?}");
    };
    let mut paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["Order.id", "Order.note"]);
}

#[test]
fn format_change_and_invalid_schemas() {
    let avro = Schema::avro(order(ID));
    let json = Schema::json(r#"{"type":"object"}"#);
    let found = compat::can_read(&json, &avro).unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].message.contains("format changed"));
    let broken = Schema::avro(r#"{"type":"record","name":"Order"}"#);
    assert!(matches!(
        compat::check(CompatibilityMode::Backward, &broken, &[(1, avro)]),
        Err(busway_schema::SchemaError::InvalidSchema { .. })
    ));
}
