#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The file-backed registry: the shared registry suite, plus persistence, the on-disk layout,
//! read-only mode and subject names that must not escape the directory.

#[path = "common/registry_suite.rs"]
mod registry_suite;

use std::path::Path;

use busway_schema::registry::FileRegistry;
use busway_schema::{CompatibilityMode, Schema, SchemaError, SchemaRegistry};
use registry_suite::{order_breaking, order_v1, order_v1_reformatted, order_v2};
use tempfile::TempDir;

async fn fixture() -> (FileRegistry, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (FileRegistry::open(dir.path()).await.unwrap(), dir)
}

registry_suite!(fixture);

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

#[tokio::test]
async fn layout_is_one_file_per_version_and_an_index_per_subject() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FileRegistry::open(dir.path()).await.unwrap();
    let s = "orders-value";
    registry.register(s, order_v1_reformatted(s)).await.unwrap();
    registry
        .set_compatibility(s, CompatibilityMode::Full)
        .await
        .unwrap();
    registry.register(s, order_v2(s)).await.unwrap();
    let proto = Schema::protobuf("syntax = \"proto3\";\nmessage Paid { int64 id = 1; }\n");
    registry
        .register("payments-value", proto.clone())
        .await
        .unwrap();

    let subject_dir = dir.path().join("subjects/orders-value");
    // Schema files hold exactly what was registered.
    assert_eq!(
        read(subject_dir.join("v1.avsc")),
        order_v1_reformatted(s).definition()
    );
    assert_eq!(read(subject_dir.join("v2.avsc")), order_v2(s).definition());
    assert_eq!(
        read(dir.path().join("subjects/payments-value/v1.proto")),
        proto.definition()
    );
    // One version per line, so that a new version is a one-line diff.
    assert_eq!(
        read(subject_dir.join("subject.json")),
        "{\n  \"compatibility\": \"FULL\",\n  \"versions\": [\n    \
         {\"version\": 1, \"id\": 1, \"schemaType\": \"AVRO\"},\n    \
         {\"version\": 2, \"id\": 2, \"schemaType\": \"AVRO\"}\n  ]\n}\n"
    );
    assert_eq!(
        read(dir.path().join("subjects/payments-value/subject.json")),
        "{\n  \"versions\": [\n    {\"version\": 1, \"id\": 3, \"schemaType\": \"PROTOBUF\"}\n  ]\n}\n"
    );
    // Nothing else: no temporary files left behind.
    let mut names: Vec<_> = std::fs::read_dir(&subject_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["subject.json", "v1.avsc", "v2.avsc"]);
}

#[tokio::test]
async fn reopening_keeps_ids_versions_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = ("a-value", "b-value");
    let before = {
        let registry = FileRegistry::open(dir.path()).await.unwrap();
        registry
            .set_default_mode(CompatibilityMode::Forward)
            .await
            .unwrap();
        registry
            .set_compatibility(b, CompatibilityMode::None)
            .await
            .unwrap();
        let mut registered = Vec::new();
        registered.push(registry.register(a, order_v1(a)).await.unwrap());
        registered.push(registry.register(b, order_v1(b)).await.unwrap());
        registered.push(registry.register(a, order_v2(a)).await.unwrap());
        registered.push(registry.register(b, order_breaking(b)).await.unwrap());
        registered
    };

    let registry = FileRegistry::open(dir.path()).await.unwrap();
    for r in &before {
        assert_eq!(&registry.version(&r.subject, r.version).await.unwrap(), r);
        assert_eq!(registry.schema_by_id(r.id).await.unwrap(), r.schema);
    }
    assert_eq!(registry.subjects().await.unwrap(), vec![a, b]);
    assert_eq!(registry.default_mode().await, CompatibilityMode::Forward);
    assert_eq!(
        registry.compatibility(a).await.unwrap(),
        CompatibilityMode::Forward
    );
    assert_eq!(
        registry.compatibility(b).await.unwrap(),
        CompatibilityMode::None
    );
    // Registering again after reopening finds the existing registration ...
    assert_eq!(registry.register(a, order_v1(a)).await.unwrap(), before[0]);
    // ... and a new schema continues the id and version sequences.
    let next = registry.register(a, order_breaking(a)).await.unwrap();
    let max_id = before.iter().map(|r| r.id).max().unwrap();
    assert_eq!((next.id, next.version), (max_id + 1, 3));
}

#[tokio::test]
async fn ids_come_from_the_index_not_from_directory_order() {
    // A directory written by hand (or merged from several branches): subject names sort in the
    // opposite order of their ids, and ids have gaps.
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "subjects/aaa/subject.json",
        r#"{"versions": [{"version": 1, "id": 20, "schemaType": "AVRO"}]}"#,
    );
    write("subjects/aaa/v1.avsc", order_v1("aaa").definition());
    write(
        "subjects/zzz/subject.json",
        r#"{"compatibility": "NONE", "versions": [{"version": 2, "id": 7, "schemaType": "JSON"}, {"version": 1, "id": 5, "schemaType": "AVRO"}]}"#,
    );
    write("subjects/zzz/v1.avsc", order_v1("zzz").definition());
    write("subjects/zzz/v2.json", r#"{"type":"object"}"#);

    let registry = FileRegistry::open_read_only(dir.path()).await.unwrap();
    assert_eq!(registry.latest("aaa").await.unwrap().id, 20);
    assert_eq!(registry.versions("zzz").await.unwrap(), vec![1, 2]);
    assert_eq!(registry.version("zzz", 1).await.unwrap().id, 5);
    let v2 = registry.version("zzz", 2).await.unwrap();
    assert_eq!(
        (v2.id, v2.schema),
        (7, Schema::json(r#"{"type":"object"}"#))
    );
    assert_eq!(
        registry.compatibility("zzz").await.unwrap(),
        CompatibilityMode::None
    );

    let writable = FileRegistry::open(dir.path()).await.unwrap();
    let next = writable.register("new", order_v2("new")).await.unwrap();
    assert_eq!(next.id, 21, "the next id follows the highest one");
}

#[tokio::test]
async fn conflicting_ids_from_a_merge_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    // Two branches each registered a different schema and took id 1.
    for (name, schema) in [("left", order_v1("left")), ("right", order_v2("right"))] {
        let registry = FileRegistry::open(dir.path().join(name)).await.unwrap();
        registry.register(name, schema).await.unwrap();
        std::fs::create_dir_all(dir.path().join("merged/subjects")).unwrap();
        std::fs::rename(
            dir.path().join(name).join("subjects").join(name),
            dir.path().join("merged/subjects").join(name),
        )
        .unwrap();
    }
    match FileRegistry::open_read_only(dir.path().join("merged")).await {
        Err(SchemaError::Config { field, reason }) => {
            assert!(field.contains("right"), "names the file at fault: {field}");
            assert!(reason.contains("id 1"), "{reason}");
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_files_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    {
        let registry = FileRegistry::open(dir.path()).await.unwrap();
        registry.register("s", order_v1("s")).await.unwrap();
    }
    let schema_file = dir.path().join("subjects/s/v1.avsc");
    std::fs::write(&schema_file, "{ not json").unwrap();
    match FileRegistry::open(dir.path()).await {
        Err(SchemaError::Config { field, reason }) => {
            assert!(field.ends_with("v1.avsc"), "{field}");
            assert!(reason.contains("AVRO"), "{reason}");
        }
        other => panic!("expected a Config error, got {other:?}"),
    }

    std::fs::remove_file(&schema_file).unwrap();
    match FileRegistry::open(dir.path()).await {
        Err(SchemaError::Io { path, source }) => {
            assert!(path.ends_with("v1.avsc"), "{path}");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an Io error, got {other:?}"),
    }

    std::fs::write(
        dir.path().join("subjects/s/subject.json"),
        r#"{"versions": 3}"#,
    )
    .unwrap();
    match FileRegistry::open(dir.path()).await {
        Err(SchemaError::Config { field, .. }) => assert!(field.ends_with("subject.json")),
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[tokio::test]
async fn read_only_registry_reads_but_refuses_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = "orders-value";
    let v1 = {
        let registry = FileRegistry::open(dir.path()).await.unwrap();
        registry.register(s, order_v1(s)).await.unwrap()
    };
    let snapshot = |dir: &Path| {
        let mut files = Vec::new();
        for entry in walk(dir) {
            files.push((entry.clone(), std::fs::read(&entry).unwrap()));
        }
        files
    };
    let before = snapshot(dir.path());

    let registry = FileRegistry::open_read_only(dir.path()).await.unwrap();
    assert!(registry.is_read_only());
    assert_eq!(registry.latest(s).await.unwrap(), v1);
    // What is registered already is found: producers registering at start-up keep working.
    assert_eq!(
        registry.register(s, order_v1_reformatted(s)).await.unwrap(),
        v1
    );
    assert!(registry.lookup(s, &order_v1(s)).await.unwrap().is_some());
    assert!(
        registry
            .check_compatibility(s, &order_v2(s))
            .await
            .unwrap()
            .is_compatible()
    );

    for refused in [
        registry.register(s, order_v2(s)).await.map(|_| ()),
        registry
            .register("other", order_v1("other"))
            .await
            .map(|_| ()),
        registry.set_compatibility(s, CompatibilityMode::None).await,
        registry.set_default_mode(CompatibilityMode::None).await,
    ] {
        match refused {
            Err(SchemaError::Unsupported(message)) => {
                assert!(message.contains("read-only"), "{message}")
            }
            other => panic!("expected a read-only refusal, got {other:?}"),
        }
    }
    assert_eq!(snapshot(dir.path()), before, "nothing written");
    assert_eq!(registry.versions(s).await.unwrap(), vec![1]);

    assert!(matches!(
        FileRegistry::open_read_only(dir.path().join("missing")).await,
        Err(SchemaError::Io { .. })
    ));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn reload_picks_up_versions_written_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let reader = FileRegistry::open_read_only(FileRegistry::open(dir.path()).await.unwrap().dir())
        .await
        .unwrap();
    let writer = FileRegistry::open(dir.path()).await.unwrap();
    let registered = writer.register("s", order_v1("s")).await.unwrap();
    assert!(matches!(
        reader.latest("s").await,
        Err(SchemaError::SubjectNotFound(_))
    ));
    reader.reload().await.unwrap();
    assert_eq!(reader.latest("s").await.unwrap(), registered);
}

#[tokio::test]
async fn subject_names_that_escape_the_directory_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("registry");
    let registry = FileRegistry::open(&dir).await.unwrap();
    for name in [
        "",
        ".",
        "..",
        "../outside",
        "a/../../outside",
        "nested/subject",
        "/etc/passwd",
        "..\\outside",
        ".git",
        "C:drive",
        "tab\there",
        "trailing.",
        "trailing ",
        "NUL",
        "com1.value",
        &"x".repeat(201),
    ] {
        for result in [
            registry.register(name, order_v1("x")).await.map(|_| ()),
            registry
                .set_compatibility(name, CompatibilityMode::None)
                .await,
        ] {
            match result {
                Err(SchemaError::Config { field, .. }) => assert_eq!(field, "subject"),
                other => panic!("{name:?} was not refused: {other:?}"),
            }
        }
    }
    assert_eq!(
        walk(root.path()),
        Vec::<std::path::PathBuf>::new(),
        "nothing written"
    );
    // Names Kafka users actually use are fine.
    for name in [
        "orders-value",
        "com.example.Order",
        "topic-com.example.Order_v2",
        "ünïcode",
    ] {
        registry.register(name, order_v1(name)).await.unwrap();
    }
    assert!(dir.join("subjects/com.example.Order/v1.avsc").exists());
}

#[tokio::test]
async fn subjects_differing_only_in_case_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FileRegistry::open(dir.path()).await.unwrap();
    registry
        .register("Orders", order_v1("Orders"))
        .await
        .unwrap();
    match registry.register("orders", order_v1("orders")).await {
        Err(SchemaError::Config { reason, .. }) => assert!(reason.contains("Orders"), "{reason}"),
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert_eq!(registry.subjects().await.unwrap(), vec!["Orders"]);
}
