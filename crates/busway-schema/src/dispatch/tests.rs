//! Unit tests of the router and the `Event<E>` extractor: versions, upcasting, compatibility
//! modes, framing, configuration, other extractors beside the event, plain routes beside typed
//! ones, and `Event<E>` outside a router.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use busway_core::{
    DeadLetterReason, DeliveryInfo, HandlerError, Incoming, Message, MessageBuilder, Router, State,
};
use tower::ServiceExt;

use super::{Event, EventRouter, EventRouterService};
use crate::codec::{AvroCodec, Codec, JsonCodec, JsonSchemaCodec, WireFormat};
use crate::error::SchemaError;
use crate::event::{DataSchema, EventType};
use crate::registry::{MemoryRegistry, SchemaRegistry};
use crate::schema::{CompatibilityMode, Schema};

const CUSTOMER_V1: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string"}},"required":["id","name"]}"#;
const CUSTOMER_V2: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"first":{"type":"string"},"last":{"type":"string"}},"required":["id","first","last"]}"#;
const CUSTOMER_V3: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"first":{"type":"string"},"last":{"type":"string"},"email":{"type":"string","minLength":3}},"required":["id","first","last","email"]}"#;

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct CustomerV1 {
    id: i64,
    name: String,
}
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct CustomerV2 {
    id: i64,
    first: String,
    last: String,
}
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct CustomerV3 {
    id: i64,
    first: String,
    last: String,
    email: String,
}

macro_rules! event {
    ($t:ty, $ty:literal, $v:literal, $codec:ident, $schema:expr) => {
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
event!(CustomerV1, "test.customer", 1, JsonSchemaCodec, CUSTOMER_V1);
event!(CustomerV2, "test.customer", 2, JsonSchemaCodec, CUSTOMER_V2);
event!(CustomerV3, "test.customer", 3, JsonSchemaCodec, CUSTOMER_V3);

const ORDER_V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
const ORDER_V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":"-"}]}"#;
const ORDER_V3: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":"-"},{"name":"rush","type":"boolean","default":false}]}"#;

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct OrderV1 {
    id: i64,
}
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct OrderV2 {
    id: i64,
    note: String,
}
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct OrderV3 {
    id: i64,
    note: String,
    rush: bool,
}
event!(OrderV1, "test.order", 1, AvroCodec, ORDER_V1);
event!(OrderV2, "test.order", 2, AvroCodec, ORDER_V2);
event!(OrderV3, "test.order", 3, AvroCodec, ORDER_V3);

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Ping {
    n: u32,
}
impl EventType for Ping {
    const TYPE: &'static str = "test.ping";
    const VERSION: u32 = 1;
    type Codec = JsonCodec<Self>;
    fn codec() -> Result<Self::Codec, SchemaError> {
        Ok(JsonCodec::new())
    }
}

async fn registry(
    subject: &str,
    schemas: &[Schema],
    mode: CompatibilityMode,
) -> Arc<MemoryRegistry> {
    let registry = MemoryRegistry::with_default_mode(CompatibilityMode::None);
    for schema in schemas {
        registry.register(subject, schema.clone()).await.unwrap();
    }
    registry.set_compatibility(subject, mode).await.unwrap();
    Arc::new(registry)
}

fn message<E: EventType>(
    event: &impl serde::Serialize,
    version: u32,
    encode: impl Fn(&serde_json::Value) -> Vec<u8>,
) -> Message {
    let value = serde_json::to_value(event).unwrap();
    Message::builder("/test", E::TYPE)
        .data(encode(&value))
        .dataschema(DataSchema::new(E::SUBJECT, version).to_string())
        .build()
        .unwrap()
}

fn encoded<E: EventType>(event: &E) -> Message {
    let data = E::codec().unwrap().encode(event).unwrap();
    Message::builder("/test", E::TYPE)
        .data(data)
        .datacontenttype(E::codec().unwrap().content_type().to_owned())
        .dataschema(DataSchema::of::<E>().to_string())
        .build()
        .unwrap()
}

fn incoming(message: Message) -> Incoming {
    Incoming::new(message, Arc::new(DeliveryInfo::new("topic", "group", 1)))
}

async fn run(router: &EventRouterService, message: Message) -> Result<(), HandlerError> {
    router.clone().oneshot(incoming(message)).await
}

/// What a recording handler received.
type Seen<E> = Arc<Mutex<Vec<E>>>;

/// Records the event in the state.
async fn record<E: EventType>(Event(event): Event<E>, State(seen): State<Seen<E>>) {
    seen.lock().unwrap().push(event);
}

/// A router recording the `E`s it receives, on `registry` (if any), plus what `configure` adds
/// (upcasters, wire format).
fn recording_router<E: EventType>(
    registry: Option<Arc<dyn SchemaRegistry>>,
    configure: impl FnOnce(EventRouter<Seen<E>>) -> EventRouter<Seen<E>>,
) -> (Seen<E>, EventRouterService) {
    let seen: Seen<E> = Arc::default();
    let mut router = EventRouter::new();
    if let Some(registry) = registry {
        router = router.registry(registry);
    }
    let router = configure(router.on(record::<E>))
        .try_with_state(seen.clone())
        .unwrap();
    (seen, router)
}

fn assert_reason(result: Result<(), HandlerError>, reason: DeadLetterReason, text: &str) {
    let err = result.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), Some(&reason), "{err}");
    assert!(
        err.to_string().contains(text),
        "expected {text:?} in: {err}"
    );
}

fn customers() -> [Schema; 3] {
    [
        Schema::json(CUSTOMER_V1),
        Schema::json(CUSTOMER_V2),
        Schema::json(CUSTOMER_V3),
    ]
}

fn orders() -> [Schema; 3] {
    [
        Schema::avro(ORDER_V1),
        Schema::avro(ORDER_V2),
        Schema::avro(ORDER_V3),
    ]
}

#[derive(Clone, Default)]
struct App {
    tenant: &'static str,
    seen: Arc<Mutex<Vec<String>>>,
}

/// The event first, then any busway-core extractors.
async fn customer_with_extractors(
    Event(c): Event<CustomerV1>,
    State(app): State<App>,
    info: DeliveryInfo,
    msg: Message,
    incoming: Incoming,
) -> Result<(), HandlerError> {
    app.seen.lock().unwrap().push(format!(
        "{} {} for {} from {}/{} attempt {} ({}, extensions attached: {})",
        c.id,
        c.name,
        app.tenant,
        info.topic,
        info.group,
        info.attempt,
        msg.ty(),
        !incoming.extensions.is_empty()
    ));
    Ok(())
}

#[tokio::test]
async fn same_version_reaches_a_handler_taking_state_and_delivery_info_beside_the_event() {
    let app = App {
        tenant: "acme",
        ..App::default()
    };
    let router = EventRouter::new().on(customer_with_extractors);
    assert_eq!(router.handles(), [("test.customer", 1)]);
    let router = router.try_with_state(app.clone()).unwrap();
    let c = CustomerV1 {
        id: 1,
        name: "Ada Lovelace".into(),
    };
    run(&router, encoded(&c)).await.unwrap();
    assert_eq!(
        *app.seen.lock().unwrap(),
        [
            "1 Ada Lovelace for acme from topic/group attempt 1 (test.customer, extensions attached: true)"
        ]
    );
}

#[tokio::test]
async fn unknown_type_missing_or_malformed_dataschema_and_wrong_content_type_are_permanent() {
    let (_, router) = recording_router::<CustomerV1>(None, |r| r);
    let c = CustomerV1 {
        id: 1,
        name: "A".into(),
    };

    let other = Message::builder("/test", "test.other").build().unwrap();
    let no_schema = Message::builder("/test", "test.customer")
        .data(encoded(&c).data().clone())
        .build()
        .unwrap();
    let with = |change: fn(MessageBuilder) -> MessageBuilder| {
        change(encoded(&c).to_builder()).build().unwrap()
    };
    let malformed = with(|b| b.dataschema("busway:/subjects/test.customer/versions/one"));
    let wrong_ct = with(|b| b.datacontenttype("application/avro"));
    let wrong_subject = with(|b| b.dataschema("busway:/subjects/elsewhere/versions/1"));
    let invalid = message::<CustomerV1>(&serde_json::json!({"id": "x"}), 1, |v| {
        serde_json::to_vec(v).unwrap()
    });
    let garbage = with(|b| b.data("{{{"));

    for (message, reason, text) in [
        (
            other,
            DeadLetterReason::UnknownType,
            "no handler for event type `test.other` (this consumer handles test.customer)",
        ),
        (
            no_schema,
            DeadLetterReason::Undecodable,
            "carries no dataschema",
        ),
        (
            malformed,
            DeadLetterReason::Undecodable,
            "malformed dataschema",
        ),
        (
            wrong_ct,
            DeadLetterReason::Undecodable,
            "datacontenttype is `application/avro`",
        ),
        (
            wrong_subject,
            DeadLetterReason::UnknownType,
            "names subject `elsewhere`",
        ),
        (invalid, DeadLetterReason::SchemaValidation, "/id"),
        (garbage, DeadLetterReason::Undecodable, "not JSON"),
    ] {
        assert_reason(run(&router, message).await, reason, text);
    }
}

#[tokio::test]
async fn handler_errors_pass_through() {
    let router = EventRouter::new()
        .on(|_: Event<Ping>| async { Err(HandlerError::transient("database down")) })
        .try_with_state(())
        .unwrap();
    let err = run(&router, encoded(&Ping { n: 1 })).await.unwrap_err();
    assert!(
        err.is_transient() && err.to_string().contains("database down"),
        "{err}"
    );
}

#[tokio::test]
async fn older_versions_are_upcast_through_typed_and_json_steps() {
    let registry = registry("test.customer", &customers(), CompatibilityMode::None).await;
    let (seen, router) = recording_router::<CustomerV3>(Some(registry), |b| {
        b.upcast(|c: CustomerV1| {
            let (first, last) = c.name.split_once(' ').unwrap_or((&c.name, ""));
            CustomerV2 {
                id: c.id,
                first: first.into(),
                last: last.into(),
            }
        })
        .upcast_json("test.customer", 2, |mut v| {
            let email = format!(
                "{}@example.com",
                v["first"].as_str().unwrap_or("x").to_lowercase()
            );
            v["email"] = email.into();
            v
        })
    });
    run(
        &router,
        encoded(&CustomerV1 {
            id: 1,
            name: "Ada Lovelace".into(),
        }),
    )
    .await
    .unwrap();
    run(
        &router,
        encoded(&CustomerV2 {
            id: 2,
            first: "Alan".into(),
            last: "Turing".into(),
        }),
    )
    .await
    .unwrap();
    let v3 = CustomerV3 {
        id: 3,
        first: "G".into(),
        last: "H".into(),
        email: "g@h.example".into(),
    };
    run(&router, encoded(&v3)).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            CustomerV3 {
                id: 1,
                first: "Ada".into(),
                last: "Lovelace".into(),
                email: "ada@example.com".into()
            },
            CustomerV3 {
                id: 2,
                first: "Alan".into(),
                last: "Turing".into(),
                email: "alan@example.com".into()
            },
            v3,
        ]
    );
}

#[tokio::test]
async fn versions_next_to_typed_upcasters_need_no_registry() {
    // Versions 1 and 2 were never registered (no producer ran them against this registry):
    // the typed upcaster's own schemas serve the chain.
    let registry = Arc::new(MemoryRegistry::new());
    let (seen, router) = recording_router::<CustomerV3>(Some(registry), |b| {
        b.upcast(|c: CustomerV1| CustomerV2 {
            id: c.id,
            first: c.name,
            last: "-".into(),
        })
        .upcast_json("test.customer", 2, |mut v| {
            v["email"] = "x@y.example".into();
            v
        })
    });
    run(
        &router,
        encoded(&CustomerV1 {
            id: 1,
            name: "Ada".into(),
        }),
    )
    .await
    .unwrap();
    run(
        &router,
        encoded(&CustomerV2 {
            id: 2,
            first: "B".into(),
            last: "C".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            CustomerV3 {
                id: 1,
                first: "Ada".into(),
                last: "-".into(),
                email: "x@y.example".into()
            },
            CustomerV3 {
                id: 2,
                first: "B".into(),
                last: "C".into(),
                email: "x@y.example".into()
            },
        ]
    );
}

#[tokio::test]
async fn an_upcaster_producing_invalid_data_is_a_validation_failure_saying_so() {
    let registry = registry("test.customer", &customers(), CompatibilityMode::None).await;
    let (seen, router) = recording_router::<CustomerV3>(Some(registry), |b| {
        b
            // Forgets the email the v3 schema requires (at least 3 characters).
            .upcast_json("test.customer", 2, |mut v| {
                v["email"] = "".into();
                v
            })
    });
    let result = run(
        &router,
        encoded(&CustomerV2 {
            id: 2,
            first: "A".into(),
            last: "B".into(),
        }),
    )
    .await;
    assert_reason(
        result,
        DeadLetterReason::SchemaValidation,
        "upcasting `test.customer` from version 2 to 3",
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn avro_steps_without_upcaster_use_schema_resolution() {
    let registry = registry("test.order", &orders(), CompatibilityMode::None).await;
    let (seen, router) = recording_router::<OrderV3>(Some(registry), |b| {
        b
            // 1 -> 2 by resolution (note takes its default), 2 -> 3 typed.
            .upcast(|o: OrderV2| OrderV3 {
                rush: o.note == "rush",
                id: o.id,
                note: o.note,
            })
    });
    run(&router, encoded(&OrderV1 { id: 1 })).await.unwrap();
    run(
        &router,
        encoded(&OrderV2 {
            id: 2,
            note: "rush".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            OrderV3 {
                id: 1,
                note: "-".into(),
                rush: false
            },
            OrderV3 {
                id: 2,
                note: "rush".into(),
                rush: true
            },
        ]
    );

    // No upcaster at all: v1 data resolved straight into v3.
    let registry = registry_for_orders().await;
    let (seen, router) = recording_router::<OrderV3>(Some(registry), |b| b);
    run(&router, encoded(&OrderV1 { id: 7 })).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [OrderV3 {
            id: 7,
            note: "-".into(),
            rush: false
        }]
    );
}

async fn registry_for_orders() -> Arc<MemoryRegistry> {
    registry("test.order", &orders(), CompatibilityMode::None).await
}

#[tokio::test]
async fn avro_json_upcaster_sees_the_data_in_its_version_shape() {
    let registry = registry_for_orders().await;
    let (seen, router) = recording_router::<OrderV3>(Some(registry), |b| {
        b.upcast_json("test.order", 2, |mut v| {
            // Version 2's shape: the default filled in by resolving v1 data into v2.
            assert_eq!(v["note"], "-", "{v}");
            v["rush"] = (v["id"].as_i64() == Some(9)).into();
            v
        })
    });
    run(&router, encoded(&OrderV1 { id: 9 })).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [OrderV3 {
            id: 9,
            note: "-".into(),
            rush: true
        }]
    );
}

#[tokio::test]
async fn newer_versions_are_read_only_where_the_mode_promises_it() {
    let cases = [
        (CompatibilityMode::Backward, 2, false),
        (CompatibilityMode::BackwardTransitive, 2, false),
        (CompatibilityMode::None, 2, false),
        (CompatibilityMode::Forward, 2, true),
        (CompatibilityMode::Full, 2, true),
        (CompatibilityMode::Forward, 3, false),
        (CompatibilityMode::Full, 3, false),
        (CompatibilityMode::ForwardTransitive, 3, true),
        (CompatibilityMode::FullTransitive, 3, true),
    ];
    for (mode, written, readable) in cases {
        let registry = registry("test.order", &orders(), mode).await;
        let (seen, router) = recording_router::<OrderV1>(Some(registry), |b| b);
        let message = if written == 2 {
            encoded(&OrderV2 {
                id: 5,
                note: "n".into(),
            })
        } else {
            encoded(&OrderV3 {
                id: 5,
                note: "n".into(),
                rush: true,
            })
        };
        let result = run(&router, message).await;
        if readable {
            result.unwrap();
            assert_eq!(
                *seen.lock().unwrap(),
                [OrderV1 { id: 5 }],
                "{mode} v{written}"
            );
        } else {
            let text = format!(
                "`test.order` version {written} is newer than the handler knows (version 1), and subject `test.order`'s compatibility mode {mode} does not promise"
            );
            assert_reason(result, DeadLetterReason::UnknownType, &text);
            assert!(seen.lock().unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn versions_the_registry_does_not_know_are_unknown() {
    let registry = registry("test.order", &orders()[..1], CompatibilityMode::None).await;
    let (_, router) = recording_router::<OrderV3>(Some(registry), |b| b);
    assert_reason(
        run(
            &router,
            encoded(&OrderV2 {
                id: 1,
                note: "x".into(),
            }),
        )
        .await,
        DeadLetterReason::UnknownType,
        "version 2",
    );
    // Without a registry, other versions cannot be read at all.
    let (_, router) = recording_router::<OrderV3>(None, |r| r);
    let err = run(&router, encoded(&OrderV1 { id: 1 })).await.unwrap_err();
    assert!(
        !err.is_transient() && err.to_string().contains("no schema registry"),
        "{err}"
    );
}

/// A registry that cannot be reached.
struct Down;

/// What every call to [`Down`] returns.
fn down<T>() -> Result<T, SchemaError> {
    Err(SchemaError::Unavailable("down".into()))
}

#[async_trait::async_trait]
impl SchemaRegistry for Down {
    async fn register(&self, _: &str, _: Schema) -> Result<crate::RegisteredSchema, SchemaError> {
        down()
    }
    async fn lookup(
        &self,
        _: &str,
        _: &Schema,
    ) -> Result<Option<crate::RegisteredSchema>, SchemaError> {
        down()
    }
    async fn schema_by_id(&self, _: u32) -> Result<Schema, SchemaError> {
        down()
    }
    async fn version(&self, _: &str, _: u32) -> Result<crate::RegisteredSchema, SchemaError> {
        down()
    }
    async fn latest(&self, _: &str) -> Result<crate::RegisteredSchema, SchemaError> {
        down()
    }
    async fn versions(&self, _: &str) -> Result<Vec<u32>, SchemaError> {
        down()
    }
    async fn subjects(&self) -> Result<Vec<String>, SchemaError> {
        down()
    }
    async fn compatibility(&self, _: &str) -> Result<CompatibilityMode, SchemaError> {
        down()
    }
    async fn set_compatibility(&self, _: &str, _: CompatibilityMode) -> Result<(), SchemaError> {
        down()
    }
}

#[tokio::test]
async fn an_unreachable_registry_is_transient_and_own_versions_do_not_need_it() {
    let (seen, router) = recording_router::<OrderV2>(Some(Arc::new(Down)), |b| b);
    run(
        &router,
        encoded(&OrderV2 {
            id: 1,
            note: "a".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    for message in [
        encoded(&OrderV1 { id: 1 }),
        encoded(&OrderV3 {
            id: 1,
            note: "a".into(),
            rush: false,
        }),
    ] {
        let err = run(&router, message).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
}

#[tokio::test]
async fn confluent_framing_round_trips_and_its_schema_id_is_checked() {
    let registry = Arc::new(MemoryRegistry::new());
    let events =
        crate::EventPublisher::builder(Arc::new(busway_memory::MemoryBroker::new()), "/test")
            .registry(registry.clone())
            .wire_format(WireFormat::Confluent)
            .build();
    let framed = events.message(&OrderV1 { id: 4 }).await.unwrap();
    let id = registry.version("test.order", 1).await.unwrap().id;
    let mut header = vec![0u8];
    header.extend_from_slice(&id.to_be_bytes());
    assert_eq!(framed.data()[..5], header[..]);
    assert_eq!(
        framed.data()[5..],
        OrderV1::codec()
            .unwrap()
            .encode(&OrderV1 { id: 4 })
            .unwrap()[..]
    );

    let (seen, router) = recording_router::<OrderV1>(Some(registry.clone()), |r| {
        r.wire_format(WireFormat::Confluent)
    });
    run(&router, framed.clone()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [OrderV1 { id: 4 }]);

    let mut other_id = framed.data().to_vec();
    other_id[4] = other_id[4].wrapping_add(1);
    let other_id = framed.to_builder().data(other_id).build().unwrap();
    assert_reason(
        run(&router, other_id).await,
        DeadLetterReason::Undecodable,
        &format!("names schema id {}", id + 1),
    );
    let unframed = encoded(&OrderV1 { id: 4 });
    assert_reason(
        run(&router, unframed).await,
        DeadLetterReason::Undecodable,
        "magic byte",
    );
    // A router expecting plain data does not mistake the header for the event.
    let (_, plain) = recording_router::<OrderV1>(None, |r| r);
    assert_reason(
        run(&plain, framed).await,
        DeadLetterReason::Undecodable,
        "cannot decode event",
    );
}

/// The first configuration mistake of `router`.
fn mistake<S: Clone + Send + Sync + 'static>(router: EventRouter<S>, state: S) -> String {
    router.try_with_state(state).unwrap_err().to_string()
}

#[test]
fn configuration_mistakes_are_reported() {
    let err = mistake(
        EventRouter::new()
            .on(|_: Event<CustomerV1>| async {})
            .on(|_: Event<CustomerV2>| async {}),
        (),
    );
    assert!(
        err.contains("two handlers for event type `test.customer` (versions 1 and 2)"),
        "{err}"
    );
    let err = mistake(
        EventRouter::new()
            .upcast_json("test.customer", 1, |v| v)
            .upcast(|c: CustomerV1| CustomerV2 {
                id: c.id,
                first: c.name,
                last: String::new(),
            }),
        (),
    );
    assert!(
        err.contains("two upcasters from version 1 of `test.customer`"),
        "{err}"
    );
    let err = mistake(EventRouter::new().upcast_json("x", 0, |v| v), ());
    assert!(err.contains("versions start at 1"), "{err}");
    // A plain route for a type a typed handler has: busway-core's router refuses it.
    let err = mistake(
        EventRouter::new()
            .on(|_: Event<Ping>| async {})
            .route(Ping::TYPE, |_: Message| async {}),
        (),
    );
    assert!(
        err.contains("more than one handler for type test.ping"),
        "{err}"
    );
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Broken;
impl EventType for Broken {
    const TYPE: &'static str = "test.broken";
    const VERSION: u32 = 1;
    type Codec = AvroCodec<Self>;
    fn codec() -> Result<Self::Codec, SchemaError> {
        AvroCodec::new(r#"{"type":"record","name":"B","fields":[{"name":"x","type":"nope"}]}"#)
    }
}

#[tokio::test]
async fn a_consumer_with_a_misconfigured_router_does_not_start() {
    let broker = Arc::new(busway_memory::MemoryBroker::new());
    let start = |router: EventRouter| {
        busway_core::Consumer::builder(broker.clone(), "topic", "group").start(router)
    };
    let err = start(
        EventRouter::new()
            .on(|_: Event<CustomerV1>| async {})
            .on(|_: Event<CustomerV2>| async {}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), busway_core::ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("two handlers"), "{err}");
    // A schema that does not compile fails the start, not the first message.
    let err = start(EventRouter::new().on(|_: Event<Broken>| async {}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), busway_core::ErrorKind::Config, "{err}");
    assert!(
        err.to_string()
            .contains("invalid AVRO schema: Unknown primitive type: nope"),
        "{err}"
    );
}

#[tokio::test]
async fn plain_routes_and_a_fallback_run_beside_typed_routes() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let router = EventRouter::new()
        .on(
            |Event(ping): Event<Ping>, State(seen): State<Arc<Mutex<Vec<String>>>>| async move {
                seen.lock().unwrap().push(format!("typed ping {}", ping.n));
            },
        )
        // A plain route: no schema, busway-core extractors only.
        .route(
            "test.legacy",
            |msg: Message, State(seen): State<Arc<Mutex<Vec<String>>>>| async move {
                seen.lock().unwrap().push(format!("legacy {}", msg.id()));
            },
        )
        // A plain route may still take an `Event<E>`: the context is attached to every delivery.
        .route(
            "test.customer",
            |Event(c): Event<CustomerV1>, State(seen): State<Arc<Mutex<Vec<String>>>>| async move {
                seen.lock()
                    .unwrap()
                    .push(format!("routed customer {}", c.name));
            },
        )
        .fallback(
            |msg: Message, State(seen): State<Arc<Mutex<Vec<String>>>>| async move {
                seen.lock().unwrap().push(format!("fallback {}", msg.ty()));
            },
        );
    assert_eq!(router.handles(), [("test.ping", 1)]);
    let router = router.try_with_state(seen.clone()).unwrap();
    let legacy = Message::builder("/test", "test.legacy")
        .id("legacy-1")
        .build()
        .unwrap();
    let other = Message::builder("/test", "test.other").build().unwrap();
    for message in [
        encoded(&Ping { n: 7 }),
        legacy,
        encoded(&CustomerV1 {
            id: 1,
            name: "Ada".into(),
        }),
        other,
    ] {
        run(&router, message).await.unwrap();
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "typed ping 7",
            "legacy legacy-1",
            "routed customer Ada",
            "fallback test.other"
        ]
    );
}

#[tokio::test]
async fn an_event_of_another_type_is_unknown() {
    // A fallback extracting `Event<Ping>` from whatever arrives.
    let router = EventRouter::new()
        .fallback(|_: Event<Ping>| async {})
        .try_with_state(())
        .unwrap();
    assert_reason(
        run(
            &router,
            encoded(&CustomerV1 {
                id: 1,
                name: "A".into(),
            }),
        )
        .await,
        DeadLetterReason::UnknownType,
        "the message's type is `test.customer`, but `busway_schema::dispatch::tests::Ping` reads `test.ping` events",
    );
    // The same event through the fallback is decoded.
    run(&router, encoded(&Ping { n: 1 })).await.unwrap();
}

#[tokio::test]
async fn an_event_outside_an_event_router_is_a_permanent_missing_extension() {
    let service = Router::new()
        .route(Ping::TYPE, |_: Event<Ping>| async {})
        .with_state(());
    let err = service
        .oneshot(incoming(encoded(&Ping { n: 1 })))
        .await
        .unwrap_err();
    assert_reason(
        Err(err),
        DeadLetterReason::Other("missing_extension".into()),
        "`Event<busway_schema::dispatch::tests::Ping>` needs the decoding context a busway_schema::EventRouter attaches",
    );
}
