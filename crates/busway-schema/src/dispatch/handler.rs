//! Typed handlers and the type-erased route that decodes and upcasts for them.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use busway_core::{HandlerError, Incoming};
use bytes::Bytes;

use super::routing::{Inner, classify};
use crate::codec::Codec;
use crate::event::EventType;
use crate::schema::SchemaFormat;

/// A boxed future that can move between threads, as [`EventHandler`]s return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An async function handling one typed event: `Fn(E)` or `Fn(E, Incoming)` (to see the message's
/// attributes and the delivery), returning `Result<(), HandlerError>`.
///
/// `Args` only tells the two forms apart; it is inferred.
pub trait EventHandler<E, Args>: Send + Sync + 'static {
    /// Handles `event`, decoded from `incoming`.
    fn call(&self, event: E, incoming: Incoming) -> BoxFuture<'static, Result<(), HandlerError>>;
}

impl<E, F, Fut> EventHandler<E, (E,)> for F
where
    E: Send + 'static,
    F: Fn(E) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn call(&self, event: E, _incoming: Incoming) -> BoxFuture<'static, Result<(), HandlerError>> {
        Box::pin(self(event))
    }
}

impl<E, F, Fut> EventHandler<E, (E, Incoming)> for F
where
    E: Send + 'static,
    F: Fn(E, Incoming) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn call(&self, event: E, incoming: Incoming) -> BoxFuture<'static, Result<(), HandlerError>> {
        Box::pin(self(event, incoming))
    }
}

/// One event type's handler, with the event type erased.
pub(super) trait Route: Send + Sync {
    fn subject(&self) -> &'static str;
    fn version(&self) -> u32;
    fn content_type(&self) -> &str;
    fn accepts(&self, content_type: &str) -> bool;
    fn format(&self) -> Option<SchemaFormat>;
    fn dispatch<'a>(
        &'a self,
        router: &'a Inner,
        incoming: Incoming,
        data: Bytes,
        written: u32,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

pub(super) struct TypedRoute<E: EventType, H, A> {
    pub(super) codec: E::Codec,
    pub(super) handler: H,
    /// `A` tells the handler's forms apart (see [`EventHandler`]).
    pub(super) _types: PhantomData<fn(A) -> E>,
}

impl<E, H, A> Route for TypedRoute<E, H, A>
where
    E: EventType,
    H: EventHandler<E, A>,
    A: 'static,
{
    fn subject(&self) -> &'static str {
        E::SUBJECT
    }

    fn version(&self) -> u32 {
        E::VERSION
    }

    fn content_type(&self) -> &str {
        self.codec.content_type()
    }

    fn accepts(&self, content_type: &str) -> bool {
        self.codec.accepts(content_type)
    }

    fn format(&self) -> Option<SchemaFormat> {
        self.codec.schema().map(|s| s.format())
    }

    fn dispatch<'a>(
        &'a self,
        router: &'a Inner,
        incoming: Incoming,
        data: Bytes,
        written: u32,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let event = router
                .upcasters
                .decode::<E>(&self.codec, &data, written, &router.schemas)
                .await
                .map_err(classify)?;
            self.handler.call(event, incoming).await
        })
    }
}
