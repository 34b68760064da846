//! The behaviour every `SchemaRegistry` must show, written once and run against each registry:
//! the in-memory one, the file-backed one and a real Confluent-compatible server.
//!
//! Each case takes a registry that may already hold other subjects (a shared server does), so
//! cases use fresh subject names and compare ids only with each other, never with fixed numbers.
//! `registry_suite!(fixture)` expands to one `#[tokio::test]` per case; `fixture` is an async fn
//! returning the registry and a guard kept alive for the test's duration.
//! `registry_suite!(fixture; case, ...)` runs only the cases listed.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use busway_schema::{CompatibilityMode, Schema, SchemaError, SchemaFormat, SchemaRegistry};

/// Expands to one test per case of the suite, each on a registry from `$fixture`; or, given a
/// list after `;`, to those cases only (for servers known to differ elsewhere).
#[macro_export]
macro_rules! registry_suite {
    ($fixture:path) => {
        $crate::registry_suite!($fixture;
            register_assigns_ids_and_versions,
            registering_again_returns_the_existing_registration,
            versions_and_latest,
            schema_by_id_and_unknown_ids,
            lookup_finds_only_registered_schemas,
            same_schema_in_two_subjects_shares_its_id,
            modes_are_per_subject,
            incompatible_schema_is_rejected_and_nothing_registered,
            mode_none_skips_the_check,
            invalid_schema_is_refused,
            invalid_protobuf_is_refused,
            unknown_subjects_and_versions,
            check_compatibility_reports_without_registering,
            every_format_registers,
            protobuf_layout_is_not_a_new_version,
            subjects_lists_registered_subjects,
        );
    };
    ($fixture:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (registry, _guard) = $fixture().await;
                registry_suite::$case(&registry).await;
            }
        )+
    };
}

/// A subject name no other test (or earlier run against a shared server) uses.
pub fn subject(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "bw-{name}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A record with a field `id`; unique per subject, so that shared servers do not hand out an
/// id registered by an earlier run.
pub fn order_v1(subject: &str) -> Schema {
    Schema::avro(format!(
        r#"{{"type":"record","name":"Order","namespace":"{ns}","fields":[{{"name":"id","type":"long"}}]}}"#,
        ns = namespace(subject)
    ))
}

/// `order_v1` reformatted: other whitespace and key order, the same schema.
pub fn order_v1_reformatted(subject: &str) -> Schema {
    Schema::avro(format!(
        "{{\n  \"fields\": [ {{ \"type\": \"long\", \"name\": \"id\" }} ],\n  \"name\": \"Order\",\n  \"namespace\": \"{ns}\",\n  \"type\": \"record\"\n}}\n",
        ns = namespace(subject)
    ))
}

/// `order_v1` plus an optional field: compatible in every direction.
pub fn order_v2(subject: &str) -> Schema {
    Schema::avro(format!(
        r#"{{"type":"record","name":"Order","namespace":"{ns}","fields":[{{"name":"id","type":"long"}},{{"name":"note","type":"string","default":""}}]}}"#,
        ns = namespace(subject)
    ))
}

/// `order_v1` plus a required field `amount`: a reader on it cannot read v1 data (not backward
/// compatible), though v1 readers can read its data (forward compatible).
pub fn order_breaking(subject: &str) -> Schema {
    Schema::avro(format!(
        r#"{{"type":"record","name":"Order","namespace":"{ns}","fields":[{{"name":"id","type":"long"}},{{"name":"amount","type":"double"}}]}}"#,
        ns = namespace(subject)
    ))
}

fn namespace(subject: &str) -> String {
    subject
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .replace("bw_", "bw.")
}

/// Asserts two schemas are the same schema, whatever the formatting a server applied.
pub fn assert_same_schema(actual: &Schema, expected: &Schema) {
    assert_eq!(actual.format(), expected.format(), "schema format");
    match actual.format() {
        SchemaFormat::Avro | SchemaFormat::Json => {
            let a: serde_json::Value = serde_json::from_str(actual.definition()).unwrap();
            let e: serde_json::Value = serde_json::from_str(expected.definition()).unwrap();
            assert_eq!(a, e, "schema definition");
        }
        SchemaFormat::Protobuf => {
            let squash = |s: &str| s.split_whitespace().collect::<String>();
            assert_eq!(
                squash(actual.definition()),
                squash(expected.definition()),
                "proto definition"
            );
        }
    }
}

pub async fn register_assigns_ids_and_versions(registry: &dyn SchemaRegistry) {
    let s = subject("ids");
    let v1 = registry.register(&s, order_v1(&s)).await.unwrap();
    assert_eq!(v1.subject, s);
    assert_eq!(v1.version, 1);
    assert!(v1.id > 0, "ids start at 1");
    assert_same_schema(&v1.schema, &order_v1(&s));

    let v2 = registry.register(&s, order_v2(&s)).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_ne!(v2.id, v1.id, "a new schema gets a new id");
    assert_same_schema(&v2.schema, &order_v2(&s));
}

pub async fn registering_again_returns_the_existing_registration(registry: &dyn SchemaRegistry) {
    let s = subject("again");
    let first = registry.register(&s, order_v1(&s)).await.unwrap();
    let second = registry.register(&s, order_v1(&s)).await.unwrap();
    assert_eq!((second.id, second.version), (first.id, first.version));
    // Whitespace and key order do not make a new version.
    let reformatted = registry
        .register(&s, order_v1_reformatted(&s))
        .await
        .unwrap();
    assert_eq!((reformatted.id, reformatted.version), (first.id, 1));
    assert_eq!(registry.versions(&s).await.unwrap(), vec![1]);

    // An older version registered again is found too, not appended.
    registry.register(&s, order_v2(&s)).await.unwrap();
    let old = registry.register(&s, order_v1(&s)).await.unwrap();
    assert_eq!((old.id, old.version), (first.id, 1));
    assert_eq!(registry.versions(&s).await.unwrap(), vec![1, 2]);
}

pub async fn versions_and_latest(registry: &dyn SchemaRegistry) {
    let s = subject("versions");
    let v1 = registry.register(&s, order_v1(&s)).await.unwrap();
    let v2 = registry.register(&s, order_v2(&s)).await.unwrap();
    assert_eq!(registry.versions(&s).await.unwrap(), vec![1, 2]);

    let latest = registry.latest(&s).await.unwrap();
    assert_eq!((latest.id, latest.version), (v2.id, 2));
    assert_eq!(latest.subject, s);
    assert_same_schema(&latest.schema, &order_v2(&s));

    let first = registry.version(&s, 1).await.unwrap();
    assert_eq!((first.id, first.version), (v1.id, 1));
    assert_same_schema(&first.schema, &order_v1(&s));
}

pub async fn schema_by_id_and_unknown_ids(registry: &dyn SchemaRegistry) {
    let s = subject("byid");
    let v1 = registry.register(&s, order_v1(&s)).await.unwrap();
    let v2 = registry.register(&s, order_v2(&s)).await.unwrap();
    assert_same_schema(&registry.schema_by_id(v1.id).await.unwrap(), &order_v1(&s));
    assert_same_schema(&registry.schema_by_id(v2.id).await.unwrap(), &order_v2(&s));

    let unknown = 2_000_000_000;
    match registry.schema_by_id(unknown).await {
        Err(SchemaError::SchemaNotFound(id)) => assert_eq!(id, unknown),
        other => panic!("expected SchemaNotFound, got {other:?}"),
    }
}

pub async fn lookup_finds_only_registered_schemas(registry: &dyn SchemaRegistry) {
    let s = subject("lookup");
    let v1 = registry.register(&s, order_v1(&s)).await.unwrap();
    registry.register(&s, order_v2(&s)).await.unwrap();

    let found = registry.lookup(&s, &order_v1(&s)).await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.version, found.subject.as_str()),
        (v1.id, 1, s.as_str())
    );
    let found = registry
        .lookup(&s, &order_v1_reformatted(&s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.version, 1, "lookup ignores formatting");

    assert_eq!(
        registry.lookup(&s, &order_breaking(&s)).await.unwrap(),
        None
    );
    let elsewhere = subject("lookup-none");
    assert_eq!(
        registry.lookup(&elsewhere, &order_v1(&s)).await.unwrap(),
        None
    );
    // Looking up registers nothing.
    assert_eq!(registry.versions(&s).await.unwrap(), vec![1, 2]);
}

pub async fn same_schema_in_two_subjects_shares_its_id(registry: &dyn SchemaRegistry) {
    let a = subject("share-a");
    let b = subject("share-b");
    let schema = order_v1(&a);
    let in_a = registry.register(&a, schema.clone()).await.unwrap();
    let in_b = registry.register(&b, schema).await.unwrap();
    assert_eq!(in_b.id, in_a.id, "ids name schemas, not registrations");
    assert_eq!((in_a.version, in_b.version), (1, 1));
}

pub async fn modes_are_per_subject(registry: &dyn SchemaRegistry) {
    let a = subject("mode-a");
    let b = subject("mode-b");
    let untouched = subject("mode-default");
    let default = registry.compatibility(&untouched).await.unwrap();
    assert_eq!(default, CompatibilityMode::Backward, "the default mode");

    registry
        .set_compatibility(&a, CompatibilityMode::Full)
        .await
        .unwrap();
    registry
        .set_compatibility(&b, CompatibilityMode::ForwardTransitive)
        .await
        .unwrap();
    assert_eq!(
        registry.compatibility(&a).await.unwrap(),
        CompatibilityMode::Full
    );
    assert_eq!(
        registry.compatibility(&b).await.unwrap(),
        CompatibilityMode::ForwardTransitive
    );
    assert_eq!(registry.compatibility(&untouched).await.unwrap(), default);

    // The mode governs registration: `order_breaking` is forward compatible only.
    registry.register(&a, order_v1(&a)).await.unwrap();
    registry.register(&b, order_v1(&b)).await.unwrap();
    let refused = registry.register(&a, order_breaking(&a)).await;
    assert!(
        matches!(refused, Err(SchemaError::Incompatible { .. })),
        "FULL refuses a backward-incompatible change: {refused:?}"
    );
    let accepted = registry.register(&b, order_breaking(&b)).await.unwrap();
    assert_eq!(accepted.version, 2, "FORWARD_TRANSITIVE accepts it");

    // Changing a subject's mode changes what it accepts.
    registry
        .set_compatibility(&a, CompatibilityMode::Forward)
        .await
        .unwrap();
    assert_eq!(
        registry
            .register(&a, order_breaking(&a))
            .await
            .unwrap()
            .version,
        2
    );
}

pub async fn incompatible_schema_is_rejected_and_nothing_registered(registry: &dyn SchemaRegistry) {
    let s = subject("incompatible");
    registry
        .set_compatibility(&s, CompatibilityMode::Backward)
        .await
        .unwrap();
    let v1 = registry.register(&s, order_v1(&s)).await.unwrap();
    match registry.register(&s, order_breaking(&s)).await {
        Err(SchemaError::Incompatible {
            subject,
            violations,
            ..
        }) => {
            assert_eq!(subject, s);
            assert!(
                violations.iter().any(|v| v.to_string().contains("amount")),
                "a violation names the field without default: {violations:?}"
            );
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    assert_eq!(registry.versions(&s).await.unwrap(), vec![1]);
    assert_eq!(registry.latest(&s).await.unwrap().id, v1.id);
}

pub async fn mode_none_skips_the_check(registry: &dyn SchemaRegistry) {
    let s = subject("none");
    registry
        .set_compatibility(&s, CompatibilityMode::None)
        .await
        .unwrap();
    registry.register(&s, order_v1(&s)).await.unwrap();
    let breaking = registry.register(&s, order_breaking(&s)).await.unwrap();
    assert_eq!(breaking.version, 2);
    // Even a change of format is accepted: nothing is checked.
    let json = Schema::json(format!(
        r#"{{"title":"{s}","type":"object","properties":{{"id":{{"type":"integer"}}}}}}"#
    ));
    assert_eq!(registry.register(&s, json).await.unwrap().version, 3);
}

pub async fn invalid_schema_is_refused(registry: &dyn SchemaRegistry) {
    let s = subject("invalid");
    for bad in [
        Schema::avro(
            r#"{"type":"record","name":"Bad","fields":[{"name":"x","type":"no_such_type"}]}"#,
        ),
        Schema::avro("this is not JSON"),
        Schema::json(r#"{"type": 12}"#),
        Schema::protobuf("syntax = \"proto3\"; message Bad { int32 x = 1; "),
    ] {
        match registry.register(&s, bad.clone()).await {
            Err(SchemaError::InvalidSchema { format, .. }) => assert_eq!(format, bad.format()),
            other => panic!("expected InvalidSchema for {bad:?}, got {other:?}"),
        }
    }
    assert!(
        matches!(
            registry.versions(&s).await,
            Err(SchemaError::SubjectNotFound(_))
        ),
        "nothing registered"
    );
    assert!(!registry.subjects().await.unwrap().contains(&s));
}

pub async fn invalid_protobuf_is_refused(registry: &dyn SchemaRegistry) {
    let s = subject("invalid-proto");
    // Parses, but names a type that does not exist.
    let bad = Schema::protobuf("syntax = \"proto3\";\nmessage Bad { strin x = 1; }\n");
    match registry.register(&s, bad).await {
        Err(SchemaError::InvalidSchema { format, .. }) => {
            assert_eq!(format, SchemaFormat::Protobuf)
        }
        other => panic!("expected InvalidSchema, got {other:?}"),
    }
    assert!(matches!(
        registry.versions(&s).await,
        Err(SchemaError::SubjectNotFound(_))
    ));
}

pub async fn unknown_subjects_and_versions(registry: &dyn SchemaRegistry) {
    let missing = subject("missing");
    assert!(matches!(
        registry.versions(&missing).await,
        Err(SchemaError::SubjectNotFound(ref name)) if *name == missing
    ));
    assert!(matches!(
        registry.latest(&missing).await,
        Err(SchemaError::SubjectNotFound(_))
    ));
    assert!(matches!(
        registry.version(&missing, 1).await,
        Err(SchemaError::SubjectNotFound(_))
    ));

    let s = subject("known");
    registry.register(&s, order_v1(&s)).await.unwrap();
    match registry.version(&s, 7).await {
        Err(SchemaError::VersionNotFound { subject, version }) => {
            assert_eq!((subject.as_str(), version), (s.as_str(), 7));
        }
        other => panic!("expected VersionNotFound, got {other:?}"),
    }
}

pub async fn check_compatibility_reports_without_registering(registry: &dyn SchemaRegistry) {
    let s = subject("check");
    registry
        .set_compatibility(&s, CompatibilityMode::Backward)
        .await
        .unwrap();
    // Against an empty subject everything is compatible.
    assert!(
        registry
            .check_compatibility(&s, &order_v1(&s))
            .await
            .unwrap()
            .is_compatible()
    );
    registry.register(&s, order_v1(&s)).await.unwrap();

    let ok = registry
        .check_compatibility(&s, &order_v2(&s))
        .await
        .unwrap();
    assert!(ok.is_compatible(), "{ok:?}");
    assert_eq!(ok.mode, CompatibilityMode::Backward);
    let bad = registry
        .check_compatibility(&s, &order_breaking(&s))
        .await
        .unwrap();
    assert!(!bad.is_compatible());
    assert!(!bad.violations.is_empty());
    assert_eq!(
        registry.versions(&s).await.unwrap(),
        vec![1],
        "nothing registered"
    );
}

pub async fn every_format_registers(registry: &dyn SchemaRegistry) {
    let json = subject("json");
    let schema = Schema::json(
        r#"{"type":"object","properties":{"id":{"type":"integer"},"note":{"type":"string"}},"required":["id"]}"#,
    );
    let registered = registry.register(&json, schema.clone()).await.unwrap();
    assert_same_schema(
        &registry.schema_by_id(registered.id).await.unwrap(),
        &schema,
    );
    let reformatted = Schema::json(
        "{\n  \"required\": [\"id\"],\n  \"type\": \"object\",\n  \"properties\": {\"note\": {\"type\": \"string\"}, \"id\": {\"type\": \"integer\"}}\n}",
    );
    assert_eq!(
        registry.register(&json, reformatted).await.unwrap().version,
        1
    );

    let proto = subject("proto");
    let package = namespace(&proto);
    let schema = Schema::protobuf(format!(
        "syntax = \"proto3\";\npackage {package};\n\nmessage Order {{\n  int64 id = 1;\n  string note = 2;\n}}\n"
    ));
    let registered = registry.register(&proto, schema.clone()).await.unwrap();
    assert_eq!(registered.version, 1);
    let stored = registry.schema_by_id(registered.id).await.unwrap();
    assert_eq!(stored.format(), SchemaFormat::Protobuf);
    assert!(stored.definition().contains("Order"));
}

pub async fn protobuf_layout_is_not_a_new_version(registry: &dyn SchemaRegistry) {
    let proto = subject("proto-layout");
    let package = namespace(&proto);
    let schema = Schema::protobuf(format!(
        "syntax = \"proto3\";\npackage {package};\n\nmessage Order {{\n  int64 id = 1;\n  string note = 2;\n}}\n"
    ));
    assert_eq!(registry.register(&proto, schema).await.unwrap().version, 1);
    let commented = Schema::protobuf(format!(
        "// An order.\nsyntax = \"proto3\";\npackage {package};\nmessage Order {{ int64 id = 1; /* free text */ string note = 2; }}\n"
    ));
    assert_eq!(
        registry.register(&proto, commented).await.unwrap().version,
        1,
        "comments and layout do not make a new version"
    );
}

pub async fn subjects_lists_registered_subjects(registry: &dyn SchemaRegistry) {
    let a = subject("list-a");
    let b = subject("list-b");
    let only_mode = subject("list-mode-only");
    registry.register(&a, order_v1(&a)).await.unwrap();
    registry.register(&b, order_v1(&b)).await.unwrap();
    registry
        .set_compatibility(&only_mode, CompatibilityMode::None)
        .await
        .unwrap();
    let subjects = registry.subjects().await.unwrap();
    assert!(
        subjects.contains(&a) && subjects.contains(&b),
        "{subjects:?}"
    );
    assert!(
        !subjects.contains(&only_mode),
        "a subject with a mode but no schema is not listed"
    );
    let mut sorted = subjects.clone();
    sorted.sort();
    assert_eq!(subjects, sorted, "sorted");
}
