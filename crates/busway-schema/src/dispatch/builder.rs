//! Configuring an [`EventRouter`]: handlers, upcasters, registry, wire format.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::Value;

use super::EventRouter;
use super::handler::{EventHandler, Route, TypedRoute};
use super::routing::Inner;
use crate::codec::{SchemaCache, WireFormat};
use crate::error::SchemaError;
use crate::event::EventType;
use crate::registry::SchemaRegistry;
use crate::upcast::Upcasters;

/// Configures an [`EventRouter`]; [`build`](Self::build) reports every configuration mistake.
#[must_use]
pub struct EventRouterBuilder {
    pub(super) registry: Option<Arc<dyn SchemaRegistry>>,
    pub(super) wire_format: WireFormat,
    pub(super) routes: HashMap<&'static str, Box<dyn Route>>,
    pub(super) upcasters: Upcasters,
    pub(super) error: Option<SchemaError>,
}

impl fmt::Debug for EventRouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRouterBuilder")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl EventRouterBuilder {
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

    /// Handles events of `E`'s type with `handler`, decoded as `E`. One handler per event type:
    /// older versions are upcast into `E`.
    pub fn on<E: EventType, A: 'static>(mut self, handler: impl EventHandler<E, A>) -> Self {
        if self.error.is_some() {
            return self;
        }
        if let Some(existing) = self.routes.get(E::TYPE) {
            self.error = Some(SchemaError::Config {
                field: "router".into(),
                reason: format!(
                    "two handlers for event type `{}` (versions {} and {}); register one, for the newest version, and upcast older versions into it",
                    E::TYPE,
                    existing.version(),
                    E::VERSION
                ),
            });
            return self;
        }
        match E::codec() {
            Ok(codec) => {
                self.routes.insert(
                    E::TYPE,
                    Box::new(TypedRoute {
                        codec,
                        handler,
                        _types: PhantomData,
                    }),
                );
            }
            Err(e) => self.error = Some(e),
        }
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

    /// The router, or the first configuration mistake: two handlers for one type, two
    /// upcasters for one step, a codec that could not be created.
    pub fn build(self) -> Result<EventRouter, SchemaError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(EventRouter {
            inner: Arc::new(Inner {
                routes: self.routes,
                upcasters: self.upcasters,
                schemas: SchemaCache::new(self.registry),
                wire_format: self.wire_format,
            }),
        })
    }
}
