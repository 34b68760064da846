#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The in-memory registry: the shared registry suite, plus what is particular to it.

#[path = "common/registry_suite.rs"]
mod registry_suite;

use busway_schema::registry::MemoryRegistry;
use busway_schema::{CompatibilityMode, SchemaError, SchemaRegistry};
use registry_suite::{order_breaking, order_v1, order_v1_reformatted, order_v2, subject};

async fn fixture() -> (MemoryRegistry, ()) {
    (MemoryRegistry::new(), ())
}

registry_suite!(fixture);

#[tokio::test]
async fn ids_and_versions_start_at_one_and_schemas_come_back_verbatim() {
    let registry = MemoryRegistry::new();
    let s = subject("verbatim");
    let first = registry
        .register(&s, order_v1_reformatted(&s))
        .await
        .unwrap();
    assert_eq!((first.id, first.version), (1, 1));
    // The first text registered is the one kept, byte for byte.
    assert_eq!(
        registry.schema_by_id(1).await.unwrap(),
        order_v1_reformatted(&s)
    );
    assert_eq!(
        registry.register(&s, order_v1(&s)).await.unwrap().schema,
        order_v1_reformatted(&s)
    );
    let second = registry.register(&s, order_v2(&s)).await.unwrap();
    assert_eq!((second.id, second.version), (2, 2));
}

#[tokio::test]
async fn default_mode_is_backward_and_configurable() {
    let s = subject("default");
    let registry = MemoryRegistry::new();
    assert_eq!(registry.default_mode().await, CompatibilityMode::Backward);
    registry.register(&s, order_v1(&s)).await.unwrap();
    assert!(matches!(
        registry.register(&s, order_breaking(&s)).await,
        Err(SchemaError::Incompatible {
            mode: CompatibilityMode::Backward,
            ..
        })
    ));

    let lenient = MemoryRegistry::with_default_mode(CompatibilityMode::None);
    assert_eq!(
        lenient.compatibility(&s).await.unwrap(),
        CompatibilityMode::None
    );
    lenient.register(&s, order_v1(&s)).await.unwrap();
    assert_eq!(
        lenient
            .register(&s, order_breaking(&s))
            .await
            .unwrap()
            .version,
        2
    );
}

#[tokio::test]
async fn clones_share_their_schemas() {
    let registry = MemoryRegistry::new();
    let clone = registry.clone();
    let s = subject("clone");
    let registered = registry.register(&s, order_v1(&s)).await.unwrap();
    assert_eq!(clone.latest(&s).await.unwrap(), registered);
}

#[tokio::test]
async fn empty_subject_is_refused() {
    let registry = MemoryRegistry::new();
    assert!(matches!(
        registry.register("", order_v1("x")).await,
        Err(SchemaError::Config { .. })
    ));
    assert!(registry.subjects().await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_registrations_get_distinct_ids_and_versions() {
    let registry = MemoryRegistry::with_default_mode(CompatibilityMode::None);
    let s = subject("concurrent");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let registry = registry.clone();
            let s = s.clone();
            tokio::spawn(async move {
                let schema = busway_schema::Schema::avro(format!(
                    r#"{{"type":"record","name":"R{i}","fields":[]}}"#
                ));
                registry.register(&s, schema).await.unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut versions = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        ids.push(r.id);
        versions.push(r.version);
    }
    ids.sort_unstable();
    versions.sort_unstable();
    assert_eq!(ids, (1..=16).collect::<Vec<_>>());
    assert_eq!(versions, (1..=16).collect::<Vec<_>>());
    assert_eq!(
        registry.versions(&s).await.unwrap(),
        (1..=16).collect::<Vec<_>>()
    );
}
