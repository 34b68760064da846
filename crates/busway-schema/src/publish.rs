//! Publishing typed events: resolve the schema, validate, encode, set the CloudEvents attributes,
//! publish.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use busway_core::{Message, MessageBuilder, Publisher};

use crate::codec::{Codec, WireFormat};
use crate::error::SchemaError;
use crate::event::{DEFAULT_BASE, DataSchema, EventType};
use crate::registry::SchemaRegistry;
use crate::registry::wire;
use crate::schema::RegisteredSchema;

/// Publishes typed events ([`EventType`]) through any [`Publisher`], with their schemas in a
/// [`SchemaRegistry`].
///
/// For each event type, the first publish resolves its schema: registers it under the event's
/// subject when auto-registration is on (the default), or looks it up when it is off (the usual
/// choice in production, where CI registers schemas after checking their compatibility). The
/// registry's answer is cached for the life of the publisher. The registry must hold the schema
/// as version [`EventType::VERSION`] of the subject; otherwise publishing fails with
/// [`SchemaError::Config`], which catches a schema changed without bumping the version.
///
/// Each publish then validates and encodes the event and sets `type` ([`EventType::TYPE`]),
/// `datacontenttype` (the codec's) and `dataschema` (subject and version, see
/// [`event`](crate::event)). An event its schema refuses is not published: the error is
/// [`busway_core::Error::InvalidMessage`] naming the violation.
///
/// ```
/// use std::sync::Arc;
/// use busway_memory::MemoryBroker;
/// use busway_schema::codec::JsonSchemaCodec;
/// use busway_schema::registry::MemoryRegistry;
/// use busway_schema::{EventType, EventPublisher, SchemaError};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced { order: u64 }
///
/// impl EventType for OrderPlaced {
///     const TYPE: &'static str = "shop.order.placed";
///     const VERSION: u32 = 1;
///     type Codec = JsonSchemaCodec<Self>;
///     fn codec() -> Result<Self::Codec, SchemaError> {
///         JsonSchemaCodec::new(r#"{"type":"object","properties":{"order":{"type":"integer","minimum":1}},"required":["order"]}"#)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> busway_core::Result<()> {
/// let broker = MemoryBroker::new();
/// let events = EventPublisher::builder(Arc::new(broker), "/shop/orders")
///     .registry(Arc::new(MemoryRegistry::new()))
///     .build();
/// events
///     .publish_with("orders", &OrderPlaced { order: 42 }, |m| m.partition_key("customer-7"))
///     .await?;
/// // Refused before it reaches the broker:
/// let err = events.publish("orders", &OrderPlaced { order: 0 }).await.unwrap_err();
/// assert_eq!(err.kind(), busway_core::ErrorKind::InvalidMessage);
/// assert!(err.to_string().contains("/order"), "{err}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EventPublisher {
    shared: Arc<Shared>,
    source: Arc<str>,
}

struct Shared {
    publisher: Arc<dyn Publisher>,
    registry: Option<Arc<dyn SchemaRegistry>>,
    auto_register: bool,
    dataschema_base: String,
    wire_format: WireFormat,
    /// `Prepared<E>` per event type, behind `Any` because the map holds every type.
    prepared: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventPublisher")
            .field("source", &self.source)
            .field("registry", &self.shared.registry.is_some())
            .field("auto_register", &self.shared.auto_register)
            .field("dataschema_base", &self.shared.dataschema_base)
            .field("wire_format", &self.shared.wire_format)
            .finish_non_exhaustive()
    }
}

/// What a publisher knows about one event type once resolved.
struct Prepared<E: EventType> {
    codec: E::Codec,
    dataschema: String,
    registered: Option<RegisteredSchema>,
}

/// Configures an [`EventPublisher`].
#[must_use]
pub struct EventPublisherBuilder {
    publisher: Arc<dyn Publisher>,
    source: String,
    registry: Option<Arc<dyn SchemaRegistry>>,
    auto_register: bool,
    dataschema_base: String,
    wire_format: WireFormat,
}

impl EventPublisherBuilder {
    /// The registry holding the events' schemas. Without one, nothing is registered or checked
    /// and `dataschema` carries [`EventType::VERSION`] as is (fine for schema-less
    /// [`JsonCodec`](crate::codec::JsonCodec) events).
    pub fn registry(mut self, registry: Arc<dyn SchemaRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Registers each event's schema on first use (on by default); when off, the schema must
    /// already be registered.
    pub fn auto_register(mut self, on: bool) -> Self {
        self.auto_register = on;
        self
    }

    /// The base of the `dataschema` URIs, e.g. the registry's address
    /// (`https://registry:8081`); `busway:` by default.
    pub fn dataschema_base(mut self, base: impl Into<String>) -> Self {
        self.dataschema_base = base.into();
        self
    }

    /// How the encoded event is framed in `data` ([`WireFormat::Plain`] by default); consumers'
    /// routers must be configured the same.
    pub fn wire_format(mut self, format: WireFormat) -> Self {
        self.wire_format = format;
        self
    }

    /// The publisher.
    pub fn build(self) -> EventPublisher {
        EventPublisher {
            shared: Arc::new(Shared {
                publisher: self.publisher,
                registry: self.registry,
                auto_register: self.auto_register,
                dataschema_base: self.dataschema_base,
                wire_format: self.wire_format,
                prepared: Mutex::new(HashMap::new()),
            }),
            source: self.source.into(),
        }
    }
}

impl EventPublisher {
    /// Starts configuring a publisher writing to `publisher`, with `source` as the CloudEvents
    /// `source` of its events.
    pub fn builder(
        publisher: Arc<dyn Publisher>,
        source: impl Into<String>,
    ) -> EventPublisherBuilder {
        EventPublisherBuilder {
            publisher,
            source: source.into(),
            registry: None,
            auto_register: true,
            dataschema_base: DEFAULT_BASE.to_owned(),
            wire_format: WireFormat::Plain,
        }
    }

    /// The same publisher (sharing its caches) with another CloudEvents `source`.
    pub fn with_source(&self, source: impl Into<String>) -> Self {
        Self {
            shared: self.shared.clone(),
            source: source.into().into(),
        }
    }

    /// Publishes `event` to `topic`.
    pub async fn publish<E: EventType>(&self, topic: &str, event: &E) -> busway_core::Result<()> {
        self.publish_with(topic, event, |m| m).await
    }

    /// Publishes `event` to `topic`, letting `customize` set other attributes (subject,
    /// partition key, correlation, time, extensions). The attributes the event owns (`type`,
    /// `datacontenttype`, `dataschema`) are set after `customize` runs, so they always describe
    /// the data.
    pub async fn publish_with<E: EventType>(
        &self,
        topic: &str,
        event: &E,
        customize: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) -> busway_core::Result<()> {
        let message = self.message_with(event, customize).await?;
        self.shared.publisher.publish(topic, message).await
    }

    /// The message [`publish`](Self::publish) would send, without sending it (for an outbox, a
    /// batch, or a test).
    pub async fn message<E: EventType>(&self, event: &E) -> busway_core::Result<Message> {
        self.message_with(event, |m| m).await
    }

    /// The message [`publish_with`](Self::publish_with) would send, without sending it.
    pub async fn message_with<E: EventType>(
        &self,
        event: &E,
        customize: impl FnOnce(MessageBuilder) -> MessageBuilder,
    ) -> busway_core::Result<Message> {
        let prepared = self.prepared::<E>().await?;
        let data = self.frame::<E>(&prepared, prepared.codec.encode(event)?)?;
        customize(Message::builder(&*self.source, E::TYPE))
            .data(data)
            .datacontenttype(prepared.codec.content_type())
            .dataschema(prepared.dataschema.clone())
            .build()
    }

    /// Frames encoded data per the wire format.
    fn frame<E: EventType>(
        &self,
        prepared: &Prepared<E>,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, SchemaError> {
        match self.shared.wire_format {
            WireFormat::Plain => Ok(data),
            WireFormat::Confluent => {
                let (Some(registered), Some(schema)) =
                    (&prepared.registered, prepared.codec.schema())
                else {
                    return Err(SchemaError::Config {
                        field: "wire_format".into(),
                        reason: format!(
                            "the Confluent wire format carries a registered schema's id, but `{}` events have no schema or the publisher no registry",
                            E::TYPE
                        ),
                    });
                };
                match schema.format() {
                    crate::SchemaFormat::Protobuf => wire::encode_protobuf(
                        registered.id,
                        &schema.protobuf_message_indexes(),
                        &data,
                    ),
                    _ => Ok(wire::encode(registered.id, &data)),
                }
            }
        }
    }

    /// Resolves `E`'s schema now rather than on first publish (to fail at startup when it is not
    /// registered); returns its registration, `None` for an event without a schema or without a
    /// registry.
    pub async fn prepare<E: EventType>(&self) -> Result<Option<RegisteredSchema>, SchemaError> {
        Ok(self.prepared::<E>().await?.registered.clone())
    }

    async fn prepared<E: EventType>(&self) -> Result<Arc<Prepared<E>>, SchemaError> {
        let key = TypeId::of::<E>();
        let cached = self.cache().get(&key).cloned();
        if let Some(found) = cached.and_then(|any| any.downcast::<Prepared<E>>().ok()) {
            return Ok(found);
        }
        // Resolved outside the lock: two first publishes may both ask the registry, which
        // answers both the same.
        let prepared = Arc::new(self.resolve::<E>().await?);
        self.cache().insert(key, prepared.clone());
        Ok(prepared)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<TypeId, Arc<dyn Any + Send + Sync>>> {
        // The map stays consistent even if a holder panicked: entries are inserted whole.
        self.shared
            .prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn resolve<E: EventType>(&self) -> Result<Prepared<E>, SchemaError> {
        let codec = E::codec()?;
        let registered = match (codec.schema(), &self.shared.registry) {
            (Some(schema), Some(registry)) => {
                let schema = schema.schema().clone();
                let registered = if self.shared.auto_register {
                    registry.register(E::SUBJECT, schema).await?
                } else {
                    registry.lookup(E::SUBJECT, &schema).await?.ok_or_else(|| {
                        SchemaError::VersionNotFound {
                            subject: E::SUBJECT.to_owned(),
                            version: E::VERSION,
                        }
                    })?
                };
                if registered.version != E::VERSION {
                    return Err(SchemaError::Config {
                        field: format!("{}::VERSION", std::any::type_name::<E>()),
                        reason: format!(
                            "the event declares version {} but the registry holds its schema as version {} of subject `{}`; \
                             bump VERSION when the schema changes",
                            E::VERSION,
                            registered.version,
                            E::SUBJECT
                        ),
                    });
                }
                Some(registered)
            }
            _ => None,
        };
        Ok(Prepared {
            codec,
            dataschema: DataSchema::of::<E>().to_uri_with_base(&self.shared.dataschema_base),
            registered,
        })
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use busway_core::ErrorKind;

    use super::*;
    use crate::codec::{AvroCodec, JsonCodec};
    use crate::registry::MemoryRegistry;
    use crate::schema::{CompatibilityMode, Schema};

    /// Keeps what is published.
    #[derive(Default)]
    struct Capture(Mutex<Vec<(String, Message)>>);

    #[async_trait]
    impl Publisher for Capture {
        async fn publish(&self, topic: &str, message: Message) -> busway_core::Result<()> {
            self.0.lock().unwrap().push((topic.to_owned(), message));
            Ok(())
        }
    }

    const V1: &str =
        r#"{"type":"record","name":"Placed","fields":[{"name":"order","type":"long"}]}"#;
    const V2: &str = r#"{"type":"record","name":"Placed","fields":[{"name":"order","type":"long"},{"name":"note","type":"string","default":""}]}"#;

    /// Makes `$t` version 1 of `shop.order.placed`, in Avro with the schema `$schema`.
    macro_rules! placed_v1 {
        ($t:ty, $schema:expr) => {
            impl EventType for $t {
                const TYPE: &'static str = "shop.order.placed";
                const VERSION: u32 = 1;
                const SUBJECT: &'static str = "shop.order.placed-value";
                type Codec = AvroCodec<Self>;
                fn codec() -> Result<Self::Codec, SchemaError> {
                    AvroCodec::new($schema)
                }
            }
        };
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct PlacedV1 {
        order: i64,
    }
    placed_v1!(PlacedV1, V1);

    /// Its schema changed, but its version was not bumped.
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct PlacedV2Forgotten {
        order: i64,
        note: String,
    }
    placed_v1!(PlacedV2Forgotten, V2);

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Note(String);
    impl EventType for Note {
        const TYPE: &'static str = "notes.added";
        const VERSION: u32 = 4;
        type Codec = JsonCodec<Self>;
        fn codec() -> Result<Self::Codec, SchemaError> {
            Ok(JsonCodec::new())
        }
    }

    fn publisher(registry: Option<Arc<MemoryRegistry>>) -> (Arc<Capture>, EventPublisherBuilder) {
        let capture = Arc::new(Capture::default());
        let mut builder = EventPublisher::builder(capture.clone(), "/shop");
        if let Some(registry) = registry {
            builder = builder.registry(registry);
        }
        (capture, builder)
    }

    #[tokio::test]
    async fn publishes_with_the_event_attributes_and_registers_once() {
        let registry = Arc::new(MemoryRegistry::new());
        let (capture, builder) = publisher(Some(registry.clone()));
        let events = builder.build();
        events
            .publish_with("orders", &PlacedV1 { order: 7 }, |m| {
                // The hook cannot make the attributes lie about the data.
                m.partition_key("c-1")
                    .subject("order/7")
                    .datacontenttype("text/plain")
                    .dataschema("busway:/subjects/x/versions/9")
            })
            .await
            .unwrap();
        events
            .with_source("/elsewhere")
            .publish("orders", &PlacedV1 { order: 8 })
            .await
            .unwrap();
        let published = capture.0.lock().unwrap().clone();
        let (topic, first) = &published[0];
        assert_eq!(topic, "orders");
        assert_eq!(first.ty(), "shop.order.placed");
        assert_eq!(first.source(), "/shop");
        assert_eq!(first.datacontenttype(), Some("application/avro"));
        assert_eq!(
            first.dataschema(),
            Some("busway:/subjects/shop.order.placed-value/versions/1")
        );
        assert_eq!(first.partition_key(), Some("c-1"));
        assert_eq!(first.subject(), Some("order/7"));
        let codec = PlacedV1::codec().unwrap();
        assert_eq!(
            codec.decode(first.data(), None).unwrap(),
            PlacedV1 { order: 7 }
        );
        assert_eq!(published[1].1.source(), "/elsewhere");
        assert_eq!(
            registry.versions("shop.order.placed-value").await.unwrap(),
            [1]
        );
    }

    #[tokio::test]
    async fn a_schema_changed_without_a_version_bump_is_refused() {
        let registry = Arc::new(MemoryRegistry::with_default_mode(CompatibilityMode::None));
        let (capture, builder) = publisher(Some(registry.clone()));
        let events = builder.build();
        events
            .publish("orders", &PlacedV1 { order: 1 })
            .await
            .unwrap();
        let err = events
            .publish(
                "orders",
                &PlacedV2Forgotten {
                    order: 1,
                    note: "n".into(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string()
                .contains("declares version 1 but the registry holds its schema as version 2"),
            "{err}"
        );
        assert_eq!(capture.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn without_auto_registration_the_schema_must_be_registered() {
        let registry = Arc::new(MemoryRegistry::new());
        let (capture, builder) = publisher(Some(registry.clone()));
        let events = builder.auto_register(false).build();
        assert!(events.prepare::<PlacedV1>().await.is_err());
        assert!(
            events
                .publish("orders", &PlacedV1 { order: 1 })
                .await
                .is_err()
        );
        assert!(capture.0.lock().unwrap().is_empty());
        registry
            .register("shop.order.placed-value", Schema::avro(V1))
            .await
            .unwrap();
        let registered = events.prepare::<PlacedV1>().await.unwrap().unwrap();
        assert_eq!(registered.version, 1);
        events
            .publish("orders", &PlacedV1 { order: 1 })
            .await
            .unwrap();
        assert_eq!(capture.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn schema_less_events_need_no_registry_and_use_the_dataschema_base() {
        let (capture, builder) = publisher(None);
        let events = builder.dataschema_base("https://registry:8081/").build();
        assert!(events.prepare::<Note>().await.unwrap().is_none());
        let message = events.message(&Note("hi".into())).await.unwrap();
        assert_eq!(
            message.dataschema(),
            Some("https://registry:8081/subjects/notes.added/versions/4")
        );
        assert_eq!(message.data().as_ref(), br#""hi""#);
        // `message` does not publish.
        assert!(capture.0.lock().unwrap().is_empty());
    }
}
