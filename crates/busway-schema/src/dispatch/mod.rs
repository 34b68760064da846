//! Dispatching messages to typed handlers by event type and version.

mod builder;
mod handler;
mod routing;
#[cfg(test)]
mod tests;

pub use builder::EventRouterBuilder;
pub use handler::{BoxFuture, EventHandler};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use busway_core::{HandlerError, Incoming};

use crate::codec::WireFormat;
use crate::upcast::Upcasters;
use routing::Inner;

/// A handler service dispatching each message to the typed handler of its event type, decoded
/// into the version that handler takes.
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
/// A registry that cannot be reached is a transient failure (retried). Handlers' own errors pass
/// through unchanged.
///
/// ```
/// use std::sync::Arc;
/// use busway_core::{Consumer, HandlerError};
/// use busway_memory::MemoryBroker;
/// use busway_schema::codec::JsonCodec;
/// use busway_schema::registry::MemoryRegistry;
/// use busway_schema::{EventType, EventRouter, SchemaError};
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
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let router = EventRouter::builder()
///     .registry(Arc::new(MemoryRegistry::new()))
///     .on(|placed: OrderPlaced| async move {
///         println!("order {}", placed.order);
///         Ok::<_, HandlerError>(())
///     })
///     .build()?;
/// let consumer = Consumer::builder(Arc::new(MemoryBroker::new()), "orders", "billing")
///     .start(router)
///     .await?;
/// # consumer.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EventRouter {
    inner: Arc<Inner>,
}

impl fmt::Debug for EventRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRouter")
            .field("handles", &self.handles())
            .field("upcasters", &self.inner.upcasters)
            .finish_non_exhaustive()
    }
}

impl EventRouter {
    /// Starts configuring a router.
    pub fn builder() -> EventRouterBuilder {
        EventRouterBuilder {
            registry: None,
            wire_format: WireFormat::Plain,
            routes: HashMap::new(),
            upcasters: Upcasters::new(),
            error: None,
        }
    }

    /// The event types handled, with the version each handler takes, sorted.
    pub fn handles(&self) -> Vec<(&'static str, u32)> {
        let mut handles: Vec<_> = self
            .inner
            .routes
            .iter()
            .map(|(ty, route)| (*ty, route.version()))
            .collect();
        handles.sort_unstable();
        handles
    }
}

impl tower::Service<Incoming> for EventRouter {
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: Incoming) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.dispatch(incoming).await })
    }
}
