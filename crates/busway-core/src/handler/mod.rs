//! What a handler receives and returns.
//!
//! A handler is an async function of extractors, the way axum handlers are: each argument is
//! taken from the delivery ([`Message`](crate::Message), [`Json<T>`], [`State<S>`],
//! [`DeliveryInfo`](crate::DeliveryInfo), [`Attributes`], [`Extensions`], ...), and whatever it
//! returns becomes the outcome ([`IntoOutcome`]: `()`, `Result<(), E>` with `E: Into<HandlerError>`,
//! or an explicit [`Outcome`]). A [`Router`] dispatches by CloudEvents `type`.
//!
//! ```
//! use busway_core::{DeliveryInfo, HandlerError, Json, Message, Router, State};
//!
//! #[derive(serde::Deserialize)]
//! struct OrderPlaced { order: u64 }
//!
//! #[derive(Clone)]
//! struct Billing { currency: &'static str }
//!
//! async fn bill(
//!     State(billing): State<Billing>,
//!     Json(evt): Json<OrderPlaced>,
//!     info: DeliveryInfo,
//! ) -> Result<(), HandlerError> {
//!     if evt.order == 0 {
//!         return Err(HandlerError::permanent("order 0 does not exist")); // straight to the DLQ
//!     }
//!     println!("bill order {} in {} (attempt {})", evt.order, billing.currency, info.attempt);
//!     Ok(())
//! }
//!
//! async fn audit(msg: Message) {
//!     println!("{} {}", msg.ty(), msg.id());
//! }
//!
//! let router = Router::new()
//!     .route("shop.order.placed.v1", bill)
//!     .fallback(audit)
//!     .with_state(Billing { currency: "EUR" });
//! // A single handler works too: `.start(bill)` on a consumer with `.state(..)`, or
//! // `bill.with_state(..)` where a tower service is wanted.
//! # let _ = router;
//! ```

mod extract;
mod incoming;
mod outcome;
mod router;
mod service;

pub use extract::{Attributes, Data, Extension, FromIncoming, FromRef, Json, JsonRejection, State};
pub use incoming::{Extensions, Incoming};
pub use outcome::{IntoOutcome, Outcome};
pub use router::{Router, RouterService};
pub use service::{
    Handler, HandlerFn, HandlerService, IntoConsumerService, ReturnsResult, handler_fn,
};

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use crate::dead_letter::DeadLetterReason;
use crate::error::{BoxError, Error};

/// Whether a failure may go away by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Retry in process, then redeliver, then dead-letter.
    Transient,
    /// Dead-letter at once.
    Permanent,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        })
    }
}

/// A handler's failure: transient (retry) or permanent (straight to the DLQ).
#[derive(Debug, thiserror::Error)]
#[error("{kind} failure: {source}")]
pub struct HandlerError {
    kind: FailureKind,
    reason: Option<DeadLetterReason>,
    #[source]
    source: BoxError,
}

impl HandlerError {
    /// A failure worth retrying (downstream unavailable, timeout, lock contention).
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self {
            kind: FailureKind::Transient,
            reason: None,
            source: source.into(),
        }
    }
    /// A failure no retry will fix (invalid content, business rule violated).
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            reason: None,
            source: source.into(),
        }
    }
    /// The message could not be decoded: permanent, dead-lettered with reason `undecodable`.
    pub fn undecodable(source: impl Into<BoxError>) -> Self {
        Self::permanent(source).with_reason(DeadLetterReason::Undecodable)
    }
    /// Sets the dead-letter reason recorded if this failure dead-letters the message.
    pub fn with_reason(mut self, reason: DeadLetterReason) -> Self {
        self.reason = Some(reason);
        self
    }
    /// Transient or permanent.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }
    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        self.kind == FailureKind::Transient
    }
    /// The dead-letter reason given with the error, if any.
    pub fn reason(&self) -> Option<&DeadLetterReason> {
        self.reason.as_ref()
    }
    /// A failed attempt for a handler that panicked: retried like a transient failure, and
    /// dead-lettered with reason `handler_panicked` (and the panic message) after the last one.
    pub fn panicked(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Transient,
            reason: Some(DeadLetterReason::HandlerPanicked),
            source: format!("handler panicked: {}", message.into()).into(),
        }
    }
    /// The text of a panic's payload (what `panic!` was given, when it was a string).
    pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic payload that is not a string".to_owned())
    }
    /// A transient failure for a handler that ran out of time.
    pub fn timed_out(after: Duration) -> Self {
        Self::transient(Error::Timeout(format!(
            "handler did not finish within {after:?}"
        )))
    }
}

impl From<Error> for HandlerError {
    /// Broker and client errors keep their classification: connection loss and timeouts are
    /// transient, everything else permanent.
    fn from(e: Error) -> Self {
        if e.is_transient() {
            Self::transient(e)
        } else {
            let reason = matches!(e, Error::Serialization { .. } | Error::InvalidMessage(_))
                .then_some(DeadLetterReason::Undecodable);
            Self {
                kind: FailureKind::Permanent,
                reason,
                source: Box::new(e),
            }
        }
    }
}

impl From<Infallible> for HandlerError {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

/// Classifies any error with `?`: `db.insert(..).await.transient()?`.
pub trait ResultExt<T> {
    /// Maps the error to a transient [`HandlerError`].
    fn transient(self) -> Result<T, HandlerError>;
    /// Maps the error to a permanent [`HandlerError`].
    fn permanent(self) -> Result<T, HandlerError>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn transient(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::transient)
    }
    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }
}
