//! [`Event<E>`]: the typed, versioned event as a handler argument.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use busway_core::{DeadLetterReason, FromIncoming, HandlerError, Incoming};

use super::context::DecodeContext;
use crate::error::SchemaError;
use crate::event::EventType;

/// The message's data as event `E`: decoded, validated against `E`'s schema and, when it was
/// written as an older version, upcast into `E`.
///
/// A handler extractor like busway-core's `Json<T>`, for handlers an
/// [`EventRouter`](super::EventRouter) runs: the router attaches what decoding needs (the
/// registry's schemas, the upcasters, the wire format) to each delivery, so handlers and
/// their state do not carry it. Put it first among a handler's arguments, followed by any
/// other extractors:
///
/// ```
/// use busway_core::{DeliveryInfo, HandlerError, State};
/// use busway_schema::codec::JsonCodec;
/// use busway_schema::{Event, EventType, SchemaError};
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
/// struct Billing { currency: &'static str }
///
/// async fn bill(
///     Event(placed): Event<OrderPlaced>,
///     State(billing): State<Billing>,
///     info: DeliveryInfo,
/// ) -> Result<(), HandlerError> {
///     println!("order {} in {} (attempt {})", placed.order, billing.currency, info.attempt);
///     Ok(())
/// }
/// # let _ = busway_schema::EventRouter::new().on(bill).try_with_state(Billing { currency: "EUR" });
/// ```
///
/// Extraction fails, and the delivery is dead-lettered at once, with these reasons:
///
/// | failure | reason |
/// |---|---|
/// | a version newer than `E` not readable under the subject's mode; a version or subject the registry does not know; a message of another type | `unknown_type` |
/// | the data breaks its schema | `schema_validation` |
/// | the data does not decode; no, or a malformed, `dataschema`; a `datacontenttype` `E`'s codec cannot read | `undecodable` |
/// | no `EventRouter` runs the handler | `missing_extension` |
///
/// An unreachable registry fails the attempt transiently (retried).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event<E>(pub E);

impl<E> Event<E> {
    /// The event.
    pub fn into_inner(self) -> E {
        self.0
    }
}

impl<E> Deref for Event<E> {
    type Target = E;
    fn deref(&self) -> &E {
        &self.0
    }
}

impl<E> DerefMut for Event<E> {
    fn deref_mut(&mut self) -> &mut E {
        &mut self.0
    }
}

/// Why [`Event<E>`] could not be extracted; each kind dead-letters under its own reason (see
/// [`Event`]), or is retried when the registry is unreachable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventRejection {
    /// No [`EventRouter`](super::EventRouter) attached its decoding context: the handler runs
    /// outside one (a plain busway-core `Router` or handler). Reason `missing_extension`, like
    /// any extractor missing what a layer should have attached: redrive once fixed.
    #[error(
        "`Event<{event}>` needs the decoding context a busway_schema::EventRouter attaches to each delivery: run this handler through an EventRouter (`.on(handler)`)"
    )]
    MissingContext {
        /// The event type's Rust name.
        event: &'static str,
    },
    /// The message is not an event `E` can read: another type, another subject, or a newer
    /// version its subject's mode does not promise to be readable. Reason `unknown_type`.
    #[error("{0}")]
    Unknown(String),
    /// Decoding, validation, upcasting or a registry lookup failed; classified by the error.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl From<EventRejection> for HandlerError {
    fn from(rejection: EventRejection) -> Self {
        match rejection {
            EventRejection::Schema(e) => classify(e),
            e @ EventRejection::Unknown(_) => {
                HandlerError::permanent(e).with_reason(DeadLetterReason::UnknownType)
            }
            e @ EventRejection::MissingContext { .. } => {
                HandlerError::permanent(e).with_reason(DeadLetterReason::parse("missing_extension"))
            }
        }
    }
}

/// The handler error for a schema failure, with the reason it dead-letters under.
fn classify(e: SchemaError) -> HandlerError {
    match e {
        SchemaError::Validation(_) => {
            HandlerError::permanent(e).with_reason(DeadLetterReason::SchemaValidation)
        }
        SchemaError::Decode(_) | SchemaError::Encode(_) => HandlerError::undecodable(e),
        SchemaError::VersionNotFound { .. }
        | SchemaError::SubjectNotFound(_)
        | SchemaError::SchemaNotFound(_) => {
            HandlerError::permanent(e).with_reason(DeadLetterReason::UnknownType)
        }
        e if e.is_transient() => HandlerError::transient(e),
        e => HandlerError::permanent(e),
    }
}

impl<E: EventType, S: Sync> FromIncoming<S> for Event<E> {
    type Rejection = EventRejection;

    async fn from_incoming(incoming: &Incoming, _: &S) -> Result<Self, EventRejection> {
        let context = incoming.extensions.get::<Arc<DecodeContext>>().ok_or(
            EventRejection::MissingContext {
                event: std::any::type_name::<E>(),
            },
        )?;
        context.decode::<E>(&incoming.message).await.map(Event)
    }
}
