//! End-to-end scenarios of typed, versioned events, written once and run on every broker:
//! `tests/e2e_memory.rs` (in-process broker) and `tests/e2e_rabbitmq.rs` (a real RabbitMQ) call
//! [`e2e_tests!`] with their harness.
//!
//! Each scenario publishes through an [`EventPublisher`] (or raw, to bypass it), consumes with
//! an [`EventRouter`] (handlers taking [`Event<E>`]) in the busway-core consumer runtime, and
//! checks what the handlers received and what the dead-letter queue holds. The JSON Schema and Avro scenarios are the same text,
//! instantiated per format by [`serde_format!`]; Protobuf has its own.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use busway_core::{
    ConsumerHandle, DeadLetter, DeadLetterReason, DeliveryInfo, HandlerError, Message, State,
};
use busway_schema::registry::MemoryRegistry;
use busway_schema::{
    CompatibilityMode, DataSchema, Event, EventPublisher, EventRouter, EventType, SchemaError,
    SchemaRegistry,
};
use busway_testkit::Harness;
use busway_testkit::conformance::support::{consumer, finish_when, unique};

/// Generates the `#[tokio::test]`s of every scenario for a harness function.
#[macro_export]
macro_rules! e2e_tests {
    ($harness:ident) => {
        $crate::e2e_tests!(@format json_schema, $harness);
        $crate::e2e_tests!(@format avro, $harness);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn json_schema_invalid_events_are_refused_at_publish_and_dead_lettered_at_consume() {
            e2e::invalid_json_events_are_refused_at_publish_and_dead_lettered_at_consume(
                $harness().await,
            )
            .await;
        }
        $crate::e2e_tests!(
            @scenarios e2e, $harness:
            protobuf_readers_on_either_version_read_both,
            handlers_take_state_and_delivery_info_beside_the_event,
            events_outside_an_event_router_are_dead_lettered,
        );
    };
    (@format $format:ident, $harness:ident) => {
        mod $format {
            use super::e2e::$format as scenarios;
            use super::$harness as harness;

            $crate::e2e_tests!(
                @scenarios scenarios, harness:
                old_events_are_upcast_for_new_consumers,
                forward_mode_lets_old_consumers_read_newer_events,
                backward_mode_dead_letters_newer_events_for_old_consumers,
                undecodable_and_unknown_events_are_dead_lettered,
                incompatible_schemas_are_refused_before_publishing,
            );
        }
    };
    // One test per scenario: `$module::$scenario` run on a fresh harness.
    (@scenarios $module:ident, $harness:ident: $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                $module::$scenario($harness().await).await;
            }
        )+
    };
}

/// What a typed handler received: the consumer's state in the recording scenarios.
pub type Seen<E> = Arc<Mutex<Vec<E>>>;

/// Records the event in the consumer's state.
async fn record<E: EventType>(Event(event): Event<E>, State(seen): State<Seen<E>>) {
    seen.lock().unwrap().push(event);
}

/// A router recording every `E` it receives in its state, plus whatever `configure` adds
/// (upcasters).
pub fn recording_router<E: EventType + Clone>(
    registry: Arc<MemoryRegistry>,
    configure: impl FnOnce(EventRouter<Seen<E>>) -> EventRouter<Seen<E>>,
) -> (EventRouter<Seen<E>>, Seen<E>) {
    let router = configure(EventRouter::new().registry(registry).on(record::<E>));
    (router, Seen::default())
}

/// Starts a consumer of `topic`/`group` running `router` with `state`.
pub async fn start<S: Clone + Send + Sync + 'static>(
    h: &Harness,
    topic: &str,
    group: &str,
    router: EventRouter<S>,
    state: S,
) -> ConsumerHandle {
    consumer(h, topic, group)
        .state(state)
        .start(router)
        .await
        .expect("consumer starts")
}

/// A publisher on the harness with `registry`, registering schemas on first use.
pub fn publisher(h: &Harness, registry: &Arc<MemoryRegistry>) -> EventPublisher {
    EventPublisher::builder(h.publisher.clone(), "/busway/e2e")
        .registry(registry.clone())
        .build()
}

/// The dead letters of `topic`/`group`, by message id.
pub async fn dead_letters(h: &Harness, topic: &str, group: &str) -> Vec<DeadLetter> {
    h.dead_letters
        .peek(topic, group, 50)
        .await
        .expect("peek the dead-letter queue")
}

/// The dead letter of message `id`, checked to be the original message with `reason` and an
/// error text containing each of `texts`.
pub fn assert_dead_lettered(
    dead: &[DeadLetter],
    original: &Message,
    reason: DeadLetterReason,
    texts: &[&str],
) {
    let letter = dead
        .iter()
        .find(|d| d.message.id() == original.id())
        .unwrap_or_else(|| panic!("message {} is not in the dead-letter queue", original.id()));
    assert_eq!(&letter.message, original, "dead-lettered unchanged");
    let meta = letter.metadata.as_ref().expect("dead-letter metadata");
    assert_eq!(
        meta.reason,
        reason,
        "reason of {}: {}",
        original.id(),
        meta.error
    );
    assert_eq!(meta.attempts, 1, "a permanent failure is not retried");
    for text in texts {
        assert!(
            meta.error.contains(text),
            "expected {text:?} in the dead-letter error: {}",
            meta.error
        );
    }
}

/// Publishes `message` as is, bypassing the [`EventPublisher`].
pub async fn publish_raw(h: &Harness, topic: &str, message: &Message) {
    h.publisher
        .publish(topic, message.clone())
        .await
        .expect("raw publish");
}

/// A raw message of `ty` naming `subject` version `version`, with `data`.
pub fn raw(
    ty: &str,
    dataschema: &str,
    content_type: &str,
    data: impl Into<bytes::Bytes>,
) -> Message {
    Message::builder("/busway/e2e/raw", ty)
        .datacontenttype(content_type)
        .dataschema(dataschema)
        .data(data)
        .build()
        .expect("a valid message")
}

/// The scenarios for a serde-based format (JSON Schema, Avro), with that format's schemas.
macro_rules! serde_format {
    (
        $format:ident, $codec:ident, $content_type:literal,
        customer: [$customer_v1:expr, $customer_v2:expr, $customer_v3:expr],
        contact: [$contact_v1:expr, $contact_v2:expr, $contact_broken:expr],
        garbage: $garbage:expr $(,)?
    ) => {
        pub mod $format {
            use super::*;
            use busway_schema::codec::$codec;

            /// `shop.customer.registered` v1: one name.
            #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
            pub struct CustomerV1 {
                pub id: i64,
                pub name: String,
            }
            /// v2: the name split in two (a breaking change, bridged by a typed upcaster).
            #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
            pub struct CustomerV2 {
                pub id: i64,
                pub first: String,
                pub last: String,
            }
            /// v3: a country (bridged by a JSON upcaster: no Rust type for v2 is needed).
            #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
            pub struct CustomerV3 {
                pub id: i64,
                pub first: String,
                pub last: String,
                pub country: String,
            }
            /// `crm.contact.added` v1.
            #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
            pub struct ContactV1 {
                pub id: i64,
                pub name: String,
            }
            impl ContactV1 {
                pub fn new(id: i64, name: &str) -> Self {
                    Self {
                        id,
                        name: name.into(),
                    }
                }
            }
            /// v2: an optional email (compatible both ways).
            #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
            pub struct ContactV2 {
                pub id: i64,
                pub name: String,
                pub email: String,
            }
            /// A v2 that changes the id's type: incompatible with v1.
            #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
            pub struct ContactBroken {
                pub id: String,
                pub name: String,
            }

            macro_rules! event {
                ($t:ident, $ty:literal, $v:literal, $schema:expr) => {
                    impl EventType for $t {
                        const TYPE: &'static str = $ty;
                        const VERSION: u32 = $v;
                        type Codec = $codec<Self>;
                        fn codec() -> Result<Self::Codec, SchemaError> {
                            $codec::new($schema)
                        }
                    }
                };
            }
            event!(CustomerV1, "shop.customer.registered", 1, $customer_v1);
            event!(CustomerV2, "shop.customer.registered", 2, $customer_v2);
            event!(CustomerV3, "shop.customer.registered", 3, $customer_v3);
            event!(ContactV1, "crm.contact.added", 1, $contact_v1);
            event!(ContactV2, "crm.contact.added", 2, $contact_v2);
            event!(ContactBroken, "crm.contact.added", 2, $contact_broken);

            fn split(c: CustomerV1) -> CustomerV2 {
                let (first, last) = c.name.split_once(' ').unwrap_or((&c.name, ""));
                CustomerV2 {
                    id: c.id,
                    first: first.to_owned(),
                    last: last.to_owned(),
                }
            }

            /// v1, v2 and v3 producers; a v3 consumer receives every event as v3, upcast.
            pub async fn old_events_are_upcast_for_new_consumers(h: Harness) {
                let topic = unique(concat!(stringify!($format), "-upcast"));
                let registry = Arc::new(MemoryRegistry::new());
                // v2 cannot read v1 data by itself (that is what the upcaster is for), so the
                // subject does not ask the registry for compatibility.
                registry
                    .set_compatibility(CustomerV1::SUBJECT, CompatibilityMode::None)
                    .await
                    .unwrap();
                let (router, seen) = recording_router::<CustomerV3>(registry.clone(), |r| {
                    r.upcast(split)
                        .upcast_json("shop.customer.registered", 2, |mut v| {
                            v["country"] = "unknown".into();
                            v
                        })
                });
                let handle = start(&h, &topic, "crm", router, seen.clone()).await;
                let events = publisher(&h, &registry);
                events
                    .publish(
                        &topic,
                        &CustomerV1 {
                            id: 1,
                            name: "Ada Lovelace".into(),
                        },
                    )
                    .await
                    .unwrap();
                events
                    .publish(
                        &topic,
                        &CustomerV2 {
                            id: 2,
                            first: "Alan".into(),
                            last: "Turing".into(),
                        },
                    )
                    .await
                    .unwrap();
                let v3 = CustomerV3 {
                    id: 3,
                    first: "Grace".into(),
                    last: "Hopper".into(),
                    country: "US".into(),
                };
                events.publish(&topic, &v3).await.unwrap();
                let report =
                    finish_when(&h, handle, "three events handled", |s| s.acked >= 3).await;
                assert_eq!(report.stats.dead_lettered, 0);
                let mut seen = seen.lock().unwrap().clone();
                seen.sort_by_key(|c| c.id);
                assert_eq!(
                    seen,
                    [
                        CustomerV3 {
                            id: 1,
                            first: "Ada".into(),
                            last: "Lovelace".into(),
                            country: "unknown".into()
                        },
                        CustomerV3 {
                            id: 2,
                            first: "Alan".into(),
                            last: "Turing".into(),
                            country: "unknown".into()
                        },
                        v3,
                    ]
                );
                assert_eq!(
                    registry.versions(CustomerV1::SUBJECT).await.unwrap(),
                    [1, 2, 3]
                );
            }

            /// What [`mailing`] sets up.
            struct Mailing {
                topic: String,
                registry: Arc<MemoryRegistry>,
                handle: ConsumerHandle,
                seen: Seen<ContactV1>,
                events: EventPublisher,
            }

            /// A `ContactV1` consumer (group `mailing`) on a fresh topic named after `what`, and
            /// a publisher, sharing a fresh registry where the subject's mode is `mode` if given.
            async fn mailing(h: &Harness, what: &str, mode: Option<CompatibilityMode>) -> Mailing {
                let topic = unique(what);
                let registry = Arc::new(MemoryRegistry::new());
                if let Some(mode) = mode {
                    registry
                        .set_compatibility(ContactV1::SUBJECT, mode)
                        .await
                        .unwrap();
                }
                let (router, seen) = recording_router::<ContactV1>(registry.clone(), |r| r);
                let handle = start(h, &topic, "mailing", router, seen.clone()).await;
                let events = publisher(h, &registry);
                Mailing {
                    topic,
                    registry,
                    handle,
                    seen,
                    events,
                }
            }

            /// A v1 consumer, v1 and v2 producers; the subject's mode is `mode`. Returns what
            /// the consumer handled, the dead letters and the v2 message.
            async fn newer_event_for_old_consumer(
                h: &Harness,
                mode: CompatibilityMode,
            ) -> (Vec<ContactV1>, Vec<DeadLetter>, Message) {
                let Mailing {
                    topic,
                    handle,
                    seen,
                    events,
                    ..
                } = mailing(h, concat!(stringify!($format), "-newer"), Some(mode)).await;
                events
                    .publish(&topic, &ContactV1::new(1, "Ann"))
                    .await
                    .unwrap();
                // Built through the publisher (registering v2), then published as is, to know
                // its id.
                let newer = events
                    .message(&ContactV2 {
                        id: 2,
                        name: "Bob".into(),
                        email: "bob@example.com".into(),
                    })
                    .await
                    .unwrap();
                assert_eq!(newer.datacontenttype(), Some($content_type));
                publish_raw(h, &topic, &newer).await;
                finish_when(h, handle, "both events settled", |s| {
                    s.acked + s.dead_lettered >= 2
                })
                .await;
                let mut seen = seen.lock().unwrap().clone();
                seen.sort_by_key(|c| c.id);
                (seen, dead_letters(h, &topic, "mailing").await, newer)
            }

            /// Under FORWARD, a v1 consumer reads a v2 event with its own schema.
            pub async fn forward_mode_lets_old_consumers_read_newer_events(h: Harness) {
                let (seen, dead, _) =
                    newer_event_for_old_consumer(&h, CompatibilityMode::Forward).await;
                assert_eq!(seen, [ContactV1::new(1, "Ann"), ContactV1::new(2, "Bob"),]);
                assert!(dead.is_empty(), "{dead:?}");
            }

            /// Under BACKWARD nothing promises that a v1 reader can read v2: the v2 event is
            /// dead-lettered with reason `unknown_type`, saying why.
            pub async fn backward_mode_dead_letters_newer_events_for_old_consumers(h: Harness) {
                let (seen, dead, newer) =
                    newer_event_for_old_consumer(&h, CompatibilityMode::Backward).await;
                assert_eq!(seen, [ContactV1::new(1, "Ann")]);
                assert_eq!(dead.len(), 1);
                assert_dead_lettered(
                    &dead,
                    &newer,
                    DeadLetterReason::UnknownType,
                    &[
                        "`crm.contact.added` version 2 is newer than the handler knows (version 1)",
                        "compatibility mode BACKWARD",
                    ],
                );
            }

            /// Bytes that do not decode, a malformed `dataschema` and a type nobody handles
            /// go to the DLQ with their reasons; a good event among them is handled.
            pub async fn undecodable_and_unknown_events_are_dead_lettered(h: Harness) {
                let Mailing {
                    topic,
                    handle,
                    seen,
                    events,
                    ..
                } = mailing(&h, concat!(stringify!($format), "-bad"), None).await;
                let v1 = DataSchema::of::<ContactV1>().to_string();
                let garbage = raw(ContactV1::TYPE, &v1, $content_type, $garbage);
                let malformed = raw(
                    ContactV1::TYPE,
                    "busway:/subjects/crm.contact.added/versions/first",
                    $content_type,
                    "{}",
                );
                let unknown = raw("crm.contact.removed", &v1, $content_type, "{}");
                for message in [&garbage, &malformed, &unknown] {
                    publish_raw(&h, &topic, message).await;
                }
                events
                    .publish(&topic, &ContactV1::new(9, "Ok"))
                    .await
                    .unwrap();
                let report = finish_when(&h, handle, "four events settled", |s| {
                    s.acked >= 1 && s.dead_lettered >= 3
                })
                .await;
                assert_eq!((report.stats.acked, report.stats.dead_lettered), (1, 3));
                assert_eq!(*seen.lock().unwrap(), [ContactV1::new(9, "Ok")]);
                let dead = dead_letters(&h, &topic, "mailing").await;
                assert_eq!(dead.len(), 3);
                assert_dead_lettered(
                    &dead,
                    &garbage,
                    DeadLetterReason::Undecodable,
                    &["cannot decode event"],
                );
                assert_dead_lettered(
                    &dead,
                    &malformed,
                    DeadLetterReason::Undecodable,
                    &["malformed dataschema", "not a decimal number"],
                );
                assert_dead_lettered(
                    &dead,
                    &unknown,
                    DeadLetterReason::UnknownType,
                    &["no handler for event type `crm.contact.removed`"],
                );
            }

            /// The registry refuses a v2 that breaks v1 readers (BACKWARD, the default): the
            /// publish fails and nothing reaches the broker.
            pub async fn incompatible_schemas_are_refused_before_publishing(h: Harness) {
                let Mailing {
                    topic,
                    registry,
                    handle,
                    seen,
                    events,
                } = mailing(&h, concat!(stringify!($format), "-incompatible"), None).await;
                events
                    .publish(&topic, &ContactV1::new(1, "Ann"))
                    .await
                    .unwrap();
                let err = events
                    .publish(
                        &topic,
                        &ContactBroken {
                            id: "two".into(),
                            name: "Bob".into(),
                        },
                    )
                    .await
                    .unwrap_err();
                assert!(
                    err.to_string().contains("is not BACKWARD compatible"),
                    "{err}"
                );
                assert!(
                    err.to_string().contains("id"),
                    "the violation names the field: {err}"
                );
                events
                    .publish(&topic, &ContactV1::new(3, "Cid"))
                    .await
                    .unwrap();
                let report = finish_when(&h, handle, "two events handled", |s| s.acked >= 2).await;
                assert_eq!((report.stats.received, report.stats.dead_lettered), (2, 0));
                let mut seen = seen.lock().unwrap().clone();
                seen.sort_by_key(|c| c.id);
                assert_eq!(seen, [ContactV1::new(1, "Ann"), ContactV1::new(3, "Cid"),]);
                assert_eq!(registry.versions(ContactV1::SUBJECT).await.unwrap(), [1]);
            }
        }
    };
}

serde_format!(
    json_schema, JsonSchemaCodec, "application/json",
    customer: [
        r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string","minLength":1}},"required":["id","name"]}"#,
        r#"{"type":"object","properties":{"id":{"type":"integer"},"first":{"type":"string"},"last":{"type":"string"}},"required":["id","first","last"]}"#,
        r#"{"type":"object","properties":{"id":{"type":"integer"},"first":{"type":"string"},"last":{"type":"string"},"country":{"type":"string"}},"required":["id","first","last","country"]}"#
    ],
    // Other properties must be strings in both versions, so v2 may add the string `email`
    // without breaking readers in either direction.
    contact: [
        r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string"}},"required":["id","name"],"additionalProperties":{"type":"string"}}"#,
        r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string"},"email":{"type":"string"}},"required":["id","name"],"additionalProperties":{"type":"string"}}"#,
        r#"{"type":"object","properties":{"id":{"type":"string"},"name":{"type":"string"}},"required":["id","name"],"additionalProperties":{"type":"string"}}"#
    ],
    garbage: "{\"id\": 1, \"name\":",
);

serde_format!(
    avro, AvroCodec, "application/avro",
    customer: [
        r#"{"type":"record","name":"CustomerRegistered","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}"#,
        r#"{"type":"record","name":"CustomerRegistered","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"first","type":"string"},{"name":"last","type":"string"}]}"#,
        r#"{"type":"record","name":"CustomerRegistered","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"first","type":"string"},{"name":"last","type":"string"},{"name":"country","type":"string"}]}"#
    ],
    // A field with a default: compatible both ways.
    contact: [
        r#"{"type":"record","name":"ContactAdded","namespace":"crm","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}"#,
        r#"{"type":"record","name":"ContactAdded","namespace":"crm","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"email","type":"string","default":""}]}"#,
        r#"{"type":"record","name":"ContactAdded","namespace":"crm","fields":[{"name":"id","type":"string"},{"name":"name","type":"string"}]}"#
    ],
    // A long whose varint never ends.
    garbage: vec![0xffu8, 0xff, 0xff],
);

/// Publishing refuses an event its schema rejects, naming the violation; a raw message with
/// data its schema rejects is dead-lettered with reason `schema_validation` and the validation
/// error in the metadata.
pub async fn invalid_json_events_are_refused_at_publish_and_dead_lettered_at_consume(h: Harness) {
    use json_schema::CustomerV1;
    let topic = unique("json-invalid");
    let registry = Arc::new(MemoryRegistry::new());
    let (router, seen) = recording_router::<CustomerV1>(registry.clone(), |r| r);
    let handle = start(&h, &topic, "crm", router, seen.clone()).await;
    let events = publisher(&h, &registry);
    let err = events
        .publish(
            &topic,
            &CustomerV1 {
                id: 1,
                name: String::new(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), busway_core::ErrorKind::InvalidMessage, "{err}");
    assert!(err.to_string().contains("/name"), "{err}");
    let valid = CustomerV1 {
        id: 2,
        name: "Ada".into(),
    };
    events.publish(&topic, &valid).await.unwrap();
    // Bypassing the publisher: `id` must be an integer.
    let invalid = raw(
        CustomerV1::TYPE,
        &DataSchema::of::<CustomerV1>().to_string(),
        "application/json",
        r#"{"id":"seven","name":"Eve"}"#,
    );
    publish_raw(&h, &topic, &invalid).await;
    let report = finish_when(&h, handle, "both events settled", |s| {
        s.acked >= 1 && s.dead_lettered >= 1
    })
    .await;
    assert_eq!((report.stats.acked, report.stats.dead_lettered), (1, 1));
    assert_eq!(*seen.lock().unwrap(), [valid]);
    let dead = dead_letters(&h, &topic, "crm").await;
    assert_eq!(dead.len(), 1);
    assert_dead_lettered(
        &dead,
        &invalid,
        DeadLetterReason::SchemaValidation,
        &[
            "event does not satisfy its schema",
            "/id",
            "\"seven\" is not of type \"integer\"",
        ],
    );
}

/// `logistics.order.shipped` in Protobuf: v2 adds a field. Under FULL, a v1 reader and a v2
/// reader (two groups of one topic) each read both versions: unknown fields are skipped,
/// missing ones take their default.
pub mod protobuf {
    use super::*;
    use busway_schema::codec::ProtobufCodec;

    const V1: &str = r#"
        syntax = "proto3";
        package logistics;
        message OrderShipped {
            int64 order = 1;
            string carrier = 2;
        }
    "#;
    const V2: &str = r#"
        syntax = "proto3";
        package logistics;
        message OrderShipped {
            int64 order = 1;
            string carrier = 2;
            string tracking = 3;
        }
    "#;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ShippedV1 {
        #[prost(int64, tag = "1")]
        pub order: i64,
        #[prost(string, tag = "2")]
        pub carrier: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ShippedV2 {
        #[prost(int64, tag = "1")]
        pub order: i64,
        #[prost(string, tag = "2")]
        pub carrier: String,
        #[prost(string, tag = "3")]
        pub tracking: String,
    }

    impl EventType for ShippedV1 {
        const TYPE: &'static str = "logistics.order.shipped";
        const VERSION: u32 = 1;
        type Codec = ProtobufCodec<Self>;
        fn codec() -> Result<Self::Codec, SchemaError> {
            ProtobufCodec::new(V1)
        }
    }

    impl EventType for ShippedV2 {
        const TYPE: &'static str = "logistics.order.shipped";
        const VERSION: u32 = 2;
        type Codec = ProtobufCodec<Self>;
        fn codec() -> Result<Self::Codec, SchemaError> {
            ProtobufCodec::new(V2)
        }
    }
}

/// See [`protobuf`].
pub async fn protobuf_readers_on_either_version_read_both(h: Harness) {
    use protobuf::{ShippedV1, ShippedV2};
    let topic = unique("protobuf");
    let registry = Arc::new(MemoryRegistry::new());
    registry
        .set_compatibility(ShippedV1::SUBJECT, CompatibilityMode::Full)
        .await
        .unwrap();
    let (old_router, old_seen) = recording_router::<ShippedV1>(registry.clone(), |r| r);
    let (new_router, new_seen) = recording_router::<ShippedV2>(registry.clone(), |r| r);
    let old = start(&h, &topic, "old-readers", old_router, old_seen.clone()).await;
    let new = start(&h, &topic, "new-readers", new_router, new_seen.clone()).await;
    let events = publisher(&h, &registry);
    let first = events
        .message(&ShippedV1 {
            order: 1,
            carrier: "DHL".into(),
        })
        .await
        .unwrap();
    assert_eq!(first.datacontenttype(), Some("application/protobuf"));
    publish_raw(&h, &topic, &first).await;
    events
        .publish(
            &topic,
            &ShippedV2 {
                order: 2,
                carrier: "UPS".into(),
                tracking: "1Z999".into(),
            },
        )
        .await
        .unwrap();
    for handle in [old, new] {
        let report = finish_when(&h, handle, "both events handled", |s| s.acked >= 2).await;
        assert_eq!(report.stats.dead_lettered, 0);
    }
    let mut old_seen = old_seen.lock().unwrap().clone();
    old_seen.sort_by_key(|s| s.order);
    assert_eq!(
        old_seen,
        [
            ShippedV1 {
                order: 1,
                carrier: "DHL".into()
            },
            ShippedV1 {
                order: 2,
                carrier: "UPS".into()
            },
        ]
    );
    let mut new_seen = new_seen.lock().unwrap().clone();
    new_seen.sort_by_key(|s| s.order);
    assert_eq!(
        new_seen,
        [
            ShippedV2 {
                order: 1,
                carrier: "DHL".into(),
                tracking: String::new()
            },
            ShippedV2 {
                order: 2,
                carrier: "UPS".into(),
                tracking: "1Z999".into()
            },
        ]
    );
    assert_eq!(registry.versions(ShippedV1::SUBJECT).await.unwrap(), [1, 2]);
}

/// What [`handlers_take_state_and_delivery_info_beside_the_event`] runs with.
#[derive(Clone)]
struct Crm {
    tenant: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

/// The event first, then busway-core extractors; fails its first attempt.
async fn welcome(
    Event(customer): Event<json_schema::CustomerV1>,
    State(crm): State<Crm>,
    info: DeliveryInfo,
    message: Message,
) -> Result<(), HandlerError> {
    crm.log.lock().unwrap().push(format!(
        "{} {} for {} on {}/{} attempt {} subject {}",
        customer.id,
        customer.name,
        crm.tenant,
        info.topic,
        info.group,
        info.attempt,
        message.subject().unwrap_or("-"),
    ));
    if info.attempt == 1 {
        return Err(HandlerError::transient("mail server busy"));
    }
    Ok(())
}

/// A typed handler takes the consumer's state and the delivery's details beside the event:
/// `consumer.state(crm).start(router)`. Its first attempt fails and the broker redelivers, so
/// the attempt number it sees comes from the broker.
pub async fn handlers_take_state_and_delivery_info_beside_the_event(h: Harness) {
    use json_schema::CustomerV1;
    let topic = unique("event-extractors");
    let registry = Arc::new(MemoryRegistry::new());
    let crm = Crm {
        tenant: "acme",
        log: Arc::default(),
    };
    let router = EventRouter::new().registry(registry.clone()).on(welcome);
    let handle = start(&h, &topic, "crm", router, crm.clone()).await;
    publisher(&h, &registry)
        .publish_with(
            &topic,
            &CustomerV1 {
                id: 1,
                name: "Ada".into(),
            },
            |m| m.subject("customers/1"),
        )
        .await
        .unwrap();
    let report = finish_when(&h, handle, "the event handled on its second attempt", |s| {
        s.acked >= 1
    })
    .await;
    assert_eq!(
        (
            report.stats.acked,
            report.stats.redelivered,
            report.stats.dead_lettered
        ),
        (1, 1, 0)
    );
    let expected = |attempt: u32| {
        format!("1 Ada for acme on {topic}/crm attempt {attempt} subject customers/1")
    };
    assert_eq!(*crm.log.lock().unwrap(), [expected(1), expected(2)]);
}

/// `Event<E>` in a handler no `EventRouter` runs (here a plain busway-core handler) has no
/// decoding context: each such delivery is dead-lettered at once with reason
/// `missing_extension` and an error saying what to do, never acknowledged unread.
pub async fn events_outside_an_event_router_are_dead_lettered(h: Harness) {
    use json_schema::CustomerV1;
    let topic = unique("event-outside-router");
    let registry = Arc::new(MemoryRegistry::new());
    let handled: Seen<CustomerV1> = Arc::default();
    let handle = consumer(&h, &topic, "plain")
        .state(handled.clone())
        .start(record::<CustomerV1>)
        .await
        .expect("consumer starts");
    let events = publisher(&h, &registry);
    let message = events
        .message(&CustomerV1 {
            id: 1,
            name: "Ada".into(),
        })
        .await
        .unwrap();
    publish_raw(&h, &topic, &message).await;
    let report = finish_when(&h, handle, "the event dead-lettered", |s| {
        s.dead_lettered >= 1
    })
    .await;
    assert_eq!((report.stats.acked, report.stats.dead_lettered), (0, 1));
    assert!(handled.lock().unwrap().is_empty());
    assert_dead_lettered(
        &dead_letters(&h, &topic, "plain").await,
        &message,
        DeadLetterReason::Other("missing_extension".into()),
        &[
            "::e2e::json_schema::CustomerV1>` needs",
            "needs the decoding context a busway_schema::EventRouter attaches",
        ],
    );
}
