//! Typed, versioned handlers on busway-core's router: the [`Event<E>`] extractor and the
//! [`EventRouter`] that runs handlers taking it.
//!
//! There is one router, busway-core's [`Router`]: it dispatches by CloudEvents `type` and
//! dead-letters types nobody handles with reason `unknown_type`. An [`EventRouter`] is that
//! router plus what decoding needs (the registry, the upcasters, the wire format): it routes
//! each handler under the type of the event its first argument takes, and attaches the decoding
//! context to every delivery, where [`Event<E>`] finds it. Everything else is busway-core's:
//! the other extractors (`State`, `DeliveryInfo`, `Message`, ...), return types (`()`,
//! `Result<(), E>`, `Outcome`), state, layers.

mod context;
mod extract;
mod handler;
#[cfg(test)]
mod tests;

pub use extract::{Event, EventRejection};
pub use handler::EventHandler;

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use busway_core::{Handler, HandlerError, Incoming, IntoConsumerService, Router, RouterService};
use serde_json::Value;
use tower::Service;
use tower::util::BoxCloneService;

use crate::codec::{SchemaCache, WireFormat};
use crate::error::SchemaError;
use crate::event::EventType;
use crate::registry::SchemaRegistry;
use crate::upcast::Upcasters;
use context::{Codecs, DecodeContext};

/// busway-core's [`Router`] for typed, versioned events: each handler takes an [`Event<E>`]
/// first and is routed under `E`'s CloudEvents type; messages are decoded into the version
/// the handler takes. `S` is the consumer's state, which handlers extract with `State`.
///
/// For a message of type `T` whose `dataschema` names version `w`, and a handler of `T` taking
/// version `t`:
///
/// - `w == t`: decoded and validated with the handler's own schema;
/// - `w < t`: upcast through the registered upcasters (see [`upcast`](crate::upcast)), or read
///   with the writer's schema where no upcaster applies;
/// - `w > t`: read with the writer's schema (Avro resolution, JSON ignoring unknown fields,
///   Protobuf unknown fields) when the subject's compatibility mode promises that version-`t`
///   readers can read version `w`: a forward mode (`FORWARD`, `FULL`) for `w == t + 1`, a
///   transitive forward mode (`FORWARD_TRANSITIVE`, `FULL_TRANSITIVE`) for any `w`; otherwise the
///   message is refused.
///
/// Failures are permanent and dead-letter the message at once, with a reason:
///
/// | failure | reason |
/// |---|---|
/// | no handler for the type; a version newer than the handler knows and not readable under the subject's mode; a version or subject the registry does not know | `unknown_type` |
/// | the data breaks its schema | `schema_validation` |
/// | the data does not decode; no, or a malformed, `dataschema`; a `datacontenttype` the handler's codec cannot read | `undecodable` |
///
/// A registry that cannot be reached is a transient failure (retried). Handlers' own results
/// pass through unchanged.
///
/// Configuration mistakes (two handlers for one type, two upcasters for one step, a schema that
/// does not compile) fail the consumer's `start` (or [`try_with_state`](Self::try_with_state))
/// with the first of them.
///
/// ```
/// use std::sync::Arc;
/// use busway_core::{Consumer, DeliveryInfo, HandlerError, Json, State};
/// use busway_memory::MemoryBroker;
/// use busway_schema::codec::JsonCodec;
/// use busway_schema::registry::MemoryRegistry;
/// use busway_schema::{Event, EventRouter, EventType, SchemaError};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced { order: u64 }
///
/// impl EventType for OrderPlaced {
///     const TYPE: &'static str = "shop.order.placed";
///     const VERSION: u32 = 1;
///     type Codec = JsonCodec<Self>;
///     fn codec() -> Result<Self::Codec, SchemaError> { Ok(JsonCodec::new()) }
/// }
///
/// #[derive(Clone)]
/// struct App { currency: &'static str }
///
/// async fn bill(Event(placed): Event<OrderPlaced>, State(app): State<App>, info: DeliveryInfo) {
///     println!("order {} in {} from {}", placed.order, app.currency, info.topic);
/// }
///
/// // Types without a schema can share the consumer: plain busway-core handlers.
/// async fn legacy(Json(v): Json<serde_json::Value>) -> Result<(), HandlerError> {
///     println!("legacy {v}");
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let router = EventRouter::new()
///     .registry(Arc::new(MemoryRegistry::new()))
///     .on(bill)
///     .route("shop.order.legacy", legacy);
/// assert_eq!(router.handles(), [("shop.order.placed", 1)]);
/// let consumer = Consumer::builder(Arc::new(MemoryBroker::new()), "orders", "billing")
///     .state(App { currency: "EUR" })
///     .start(router)
///     .await?;
/// # consumer.shutdown().await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct EventRouter<S = ()> {
    router: Router<S>,
    registry: Option<Arc<dyn SchemaRegistry>>,
    wire_format: WireFormat,
    upcasters: Upcasters,
    /// The version each typed route reads, by CloudEvents type.
    handles: BTreeMap<&'static str, u32>,
    /// The typed routes' codecs, compiled when they are added.
    codecs: Codecs,
    /// The first configuration mistake; reported when the router is started.
    error: Option<SchemaError>,
}

impl<S> Default for EventRouter<S> {
    fn default() -> Self {
        Self {
            router: Router::default(),
            registry: None,
            wire_format: WireFormat::Plain,
            upcasters: Upcasters::new(),
            handles: BTreeMap::new(),
            codecs: Codecs::new(),
            error: None,
        }
    }
}

impl<S> fmt::Debug for EventRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRouter")
            .field("handles", &self.handles)
            .field("router", &self.router)
            .field("upcasters", &self.upcasters)
            .field("wire_format", &self.wire_format)
            .field("registry", &self.registry.is_some())
            .field("error", &self.error)
            .finish()
    }
}

impl<S: Clone + Send + Sync + 'static> EventRouter<S> {
    /// A router with no routes: every message is dead-lettered as `unknown_type` until routed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry the writers' schemas and the subjects' compatibility modes come from. Needed
    /// to read any version other than a handler's own (except for schema-less JSON events).
    pub fn registry(mut self, registry: Arc<dyn SchemaRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// How the encoded events are framed in `data` ([`WireFormat::Plain`] by default), as the
    /// publishers wrote them.
    pub fn wire_format(mut self, format: WireFormat) -> Self {
        self.wire_format = format;
        self
    }

    /// Handles events of type `E::TYPE` with `handler`, an async function whose first argument
    /// is [`Event<E>`] (any busway-core extractors may follow). One handler per event type:
    /// older versions are upcast into `E`.
    pub fn on<H, T>(mut self, handler: H) -> Self
    where
        H: EventHandler<T, S>,
        T: 'static,
    {
        if self.error.is_some() {
            return self;
        }
        let (ty, version) = (H::Event::TYPE, H::Event::VERSION);
        if let Some(existing) = self.handles.get(ty) {
            self.error = Some(SchemaError::Config {
                field: "router".into(),
                reason: format!(
                    "two handlers for event type `{ty}` (versions {existing} and {version}); register one, for the newest version, and upcast older versions into it"
                ),
            });
            return self;
        }
        match H::Event::codec() {
            Ok(codec) => {
                let codec: Arc<dyn Any + Send + Sync> = Arc::new(codec);
                self.codecs.insert(TypeId::of::<H::Event>(), codec);
                self.handles.insert(ty, version);
                self.router = self.router.route(ty, handler);
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Handles messages of CloudEvents type `ty` with a plain busway-core handler (no schema, or
    /// one it decodes itself), beside the typed routes. It may take an [`Event<E>`] too.
    pub fn route<H, T>(mut self, ty: impl Into<String>, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.route(ty, handler);
        self
    }

    /// Handles messages of every type no route names, instead of dead-lettering them as
    /// `unknown_type`.
    pub fn fallback<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.fallback(handler);
        self
    }

    /// Adds a typed upcaster from version `n` (`From`) to `n + 1` (`To`) of an event type; see
    /// [`Upcasters::typed`].
    pub fn upcast<From, To, F>(mut self, f: F) -> Self
    where
        From: EventType,
        To: EventType,
        F: Fn(From) -> To + Send + Sync + 'static,
    {
        if self.error.is_none()
            && let Err(e) = self.upcasters.typed(f)
        {
            self.error = Some(e);
        }
        self
    }

    /// Adds a JSON upcaster from version `from_version` of `event_type` to the next; see
    /// [`Upcasters::json`].
    pub fn upcast_json<F>(mut self, event_type: &str, from_version: u32, f: F) -> Self
    where
        F: Fn(Value) -> Value + Send + Sync + 'static,
    {
        if self.error.is_none()
            && let Err(e) = self.upcasters.json(event_type, from_version, f)
        {
            self.error = Some(e);
        }
        self
    }

    /// The event types handled by [`on`](Self::on), with the version each handler takes,
    /// sorted.
    pub fn handles(&self) -> Vec<(&'static str, u32)> {
        self.handles.iter().map(|(ty, v)| (*ty, *v)).collect()
    }

    /// The router as a tower service, its handlers given `state`; or the first configuration
    /// mistake. A consumer's `start` calls this; use it directly to run the router elsewhere.
    pub fn try_with_state(self, state: S) -> Result<EventRouterService, SchemaError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let router = self.router.try_with_state(state).map_err(|e| match e {
            busway_core::Error::Config { field, reason } => SchemaError::Config { field, reason },
            other => SchemaError::Config {
                field: "router".into(),
                reason: other.to_string(),
            },
        })?;
        Ok(EventRouterService {
            context: Arc::new(DecodeContext::new(
                SchemaCache::new(self.registry),
                self.upcasters,
                self.wire_format,
                self.codecs,
            )),
            router,
        })
    }
}

/// An [`EventRouter`] with its state: the tower service a consumer runs. Attaches the decoding
/// context to each delivery, then dispatches with busway-core's router.
#[derive(Clone)]
pub struct EventRouterService {
    context: Arc<DecodeContext>,
    router: RouterService,
}

impl fmt::Debug for EventRouterService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRouterService")
            .field("router", &self.router)
            .field("context", &self.context)
            .finish()
    }
}

impl Service<Incoming> for EventRouterService {
    type Response = ();
    type Error = HandlerError;
    type Future = <RouterService as Service<Incoming>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.router.poll_ready(cx)
    }

    fn call(&mut self, mut incoming: Incoming) -> Self::Future {
        incoming.extensions.insert(self.context.clone());
        self.router.call(incoming)
    }
}

/// Marks the [`IntoConsumerService`] implementation for [`EventRouter`]s.
#[doc(hidden)]
pub struct IsEventRouter;

/// `consumer.state(app).start(router)`: the router gets the consumer's state; a configuration
/// mistake fails the start as a configuration error.
impl<S: Clone + Send + Sync + 'static> IntoConsumerService<IsEventRouter, S> for EventRouter<S> {
    fn into_consumer_service(
        self,
        state: S,
    ) -> Result<BoxCloneService<Incoming, (), HandlerError>, busway_core::Error> {
        let service = self.try_with_state(state).map_err(|e| match e {
            SchemaError::Config { field, reason } => busway_core::Error::Config { field, reason },
            other => busway_core::Error::config("router", other.to_string()),
        })?;
        Ok(BoxCloneService::new(service))
    }
}
