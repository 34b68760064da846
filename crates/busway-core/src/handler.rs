//! What a handler receives and returns, and adapters from async functions to tower services.
//!
//! A handler is a `tower::Service<Incoming, Response = (), Error = HandlerError>`. Most are
//! written as async functions and wrapped with [`handler_fn`], which extracts its argument from the
//! delivery the way axum extracts request parts:
//!
//! ```
//! use busway_core::{handler_fn, HandlerError, Json, Message};
//!
//! #[derive(serde::Deserialize)]
//! struct OrderPlaced { order: u64 }
//!
//! // Whole message:
//! let raw = handler_fn(|msg: Message| async move {
//!     println!("{}", msg.id());
//!     Ok::<_, HandlerError>(())
//! });
//! // Decoded JSON data; undecodable data goes to the DLQ with reason `undecodable`:
//! let typed = handler_fn(|Json(evt): Json<OrderPlaced>| async move {
//!     if evt.order == 0 {
//!         return Err(HandlerError::permanent("order 0 does not exist"));
//!     }
//!     Ok(())
//! });
//! # let _ = (raw, typed);
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::dead_letter::DeadLetterReason;
use crate::delivery::DeliveryInfo;
use crate::error::{BoxError, Error};
use crate::message::Message;

/// What the runtime hands to the handler stack for one attempt.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The message.
    pub message: Message,
    /// Topic, group and attempt number.
    pub info: Arc<DeliveryInfo>,
}

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

/// A handler argument extracted from an [`Incoming`].
pub trait FromIncoming: Sized + Send + 'static {
    /// Extracts the argument; an error fails the attempt with it.
    fn from_incoming(incoming: &Incoming) -> Result<Self, HandlerError>;
}

impl FromIncoming for Incoming {
    fn from_incoming(incoming: &Incoming) -> Result<Self, HandlerError> {
        Ok(incoming.clone())
    }
}

impl FromIncoming for Message {
    fn from_incoming(incoming: &Incoming) -> Result<Self, HandlerError> {
        Ok(incoming.message.clone())
    }
}

/// Extracts and decodes JSON data; a decoding failure is permanent with reason `undecodable`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> FromIncoming for Json<T> {
    fn from_incoming(incoming: &Incoming) -> Result<Self, HandlerError> {
        incoming
            .message
            .decode_json()
            .map(Json)
            .map_err(HandlerError::undecodable)
    }
}

/// Turns an async function of one [`FromIncoming`] argument into a handler service.
pub fn handler_fn<F, A, Fut>(f: F) -> HandlerFn<F, A>
where
    F: Fn(A) -> Fut + Clone + Send + Sync + 'static,
    A: FromIncoming,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    HandlerFn {
        f,
        _arg: PhantomData,
    }
}

/// The service made by [`handler_fn`].
pub struct HandlerFn<F, A> {
    f: F,
    _arg: PhantomData<fn(A)>,
}

impl<F: Clone, A> Clone for HandlerFn<F, A> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _arg: PhantomData,
        }
    }
}

impl<F, A, Fut> tower::Service<Incoming> for HandlerFn<F, A>
where
    F: Fn(A) -> Fut + Clone + Send + Sync + 'static,
    A: FromIncoming,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: Incoming) -> Self::Future {
        match A::from_incoming(&incoming) {
            Ok(arg) => Box::pin((self.f)(arg)),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}
