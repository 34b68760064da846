//! Async functions of extractors as handlers, and handlers as tower services.

use std::marker::PhantomData;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::Service;
use tower::util::BoxCloneService;

use super::extract::FromIncoming;
use super::outcome::IntoOutcome;
use super::{HandlerError, Incoming};
use crate::error::Error;

/// An async function whose arguments are extractors (up to 12) and whose result is an
/// [`IntoOutcome`], run with the consumer's state `S`.
///
/// Implemented for every such `Fn`; `T` is the tuple of argument types, inferred. A handler is
/// called once per attempt, so it is `Clone` and its extractors run again on a retry.
pub trait Handler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// Handles one attempt.
    fn call(self, incoming: Incoming, state: S) -> BoxFuture<'static, Result<(), HandlerError>>;

    /// This handler as a tower service with `state`.
    fn with_state(self, state: S) -> HandlerService<Self, T, S> {
        HandlerService {
            handler: self,
            state,
            _args: PhantomData,
        }
    }
}

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, R, S, $($arg,)*> Handler<($($arg,)*), S> for F
        where
            F: FnOnce($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoOutcome,
            S: Send + Sync + 'static,
            $($arg: FromIncoming<S> + Send + 'static,)*
        {
            fn call(self, incoming: Incoming, state: S) -> BoxFuture<'static, Result<(), HandlerError>> {
                Box::pin(async move {
                    $(
                        let $arg = $arg::from_incoming(&incoming, &state)
                            .await
                            .map_err(Into::into)?;
                    )*
                    self($($arg),*).await.into_outcome()
                })
            }
        }

        impl<F, Fut, $($arg,)*> ReturnsResult<($($arg,)*)> for F
        where
            F: FnOnce($($arg),*) -> Fut,
            Fut: Future<Output = Result<(), HandlerError>>,
        {
        }
    };
}

/// Functions returning `Result<(), HandlerError>`: what [`handler_fn`] takes, so that a
/// closure's `Ok(())` needs no type annotation.
#[doc(hidden)]
pub trait ReturnsResult<T> {}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);

/// A [`Handler`] with its state: a `tower::Service<Incoming>` the consumer runtime can run.
pub struct HandlerService<H, T, S> {
    handler: H,
    state: S,
    _args: PhantomData<fn() -> T>,
}

impl<H: Clone, T, S: Clone> Clone for HandlerService<H, T, S> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            state: self.state.clone(),
            _args: PhantomData,
        }
    }
}

impl<H, T, S> std::fmt::Debug for HandlerService<H, T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerService")
            .field("handler", &std::any::type_name::<H>())
            .finish_non_exhaustive()
    }
}

impl<H, T, S> Service<Incoming> for HandlerService<H, T, S>
where
    H: Handler<T, S>,
    S: Clone,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: Incoming) -> Self::Future {
        self.handler.clone().call(incoming, self.state.clone())
    }
}

/// A stateless handler as a service: what [`handler_fn`] makes.
pub type HandlerFn<F, T> = HandlerService<F, T, ()>;

/// Turns an async function of extractors returning `Result<(), HandlerError>` into a handler
/// service, with no state. Its result type is fixed so that closures need no annotation on
/// `Ok(())`; functions returning anything else [`IntoOutcome`] (e.g. `()` or an
/// [`Outcome`](super::Outcome)) go to a consumer's `start` or a [`Router`](super::Router)
/// directly, or through [`Handler::with_state`].
///
/// ```
/// use busway_core::{handler_fn, HandlerError, Json, Message};
///
/// #[derive(serde::Deserialize)]
/// struct OrderPlaced { order: u64 }
///
/// let raw = handler_fn(|msg: Message| async move {
///     println!("{}", msg.id());
///     Ok(())
/// });
/// let two = handler_fn(|msg: Message, info: busway_core::DeliveryInfo| async move {
///     println!("{} attempt {}", msg.id(), info.attempt);
///     Ok(())
/// });
/// let typed = handler_fn(|Json(evt): Json<OrderPlaced>| async move {
///     if evt.order == 0 {
///         return Err(HandlerError::permanent("order 0 does not exist"));
///     }
///     Ok(())
/// });
/// # let _ = (raw, two, typed);
/// ```
pub fn handler_fn<F, T>(f: F) -> HandlerFn<F, T>
where
    F: Handler<T, ()> + ReturnsResult<T>,
{
    f.with_state(())
}

/// Marks the [`IntoConsumerService`] implementation for handler functions.
#[doc(hidden)]
pub struct IsHandler<T>(PhantomData<fn() -> T>);

/// Marks the [`IntoConsumerService`] implementation for tower services.
#[doc(hidden)]
pub struct IsService;

/// What a consumer can run: a [`Handler`] function (given the consumer's state), a
/// [`Router`](super::Router), or any `tower::Service<Incoming>` (which ignores the state).
///
/// `M` only tells the kinds apart; it is inferred.
pub trait IntoConsumerService<M, S> {
    /// The service, with the consumer's state; fails on a configuration mistake (e.g. a
    /// router with two handlers for one type).
    fn into_consumer_service(
        self,
        state: S,
    ) -> Result<BoxCloneService<Incoming, (), HandlerError>, Error>;
}

impl<H, T, S> IntoConsumerService<IsHandler<T>, S> for H
where
    H: Handler<T, S>,
    S: Clone + Send + Sync + 'static,
    T: 'static,
{
    fn into_consumer_service(
        self,
        state: S,
    ) -> Result<BoxCloneService<Incoming, (), HandlerError>, Error> {
        Ok(BoxCloneService::new(self.with_state(state)))
    }
}

impl<Svc, S> IntoConsumerService<IsService, S> for Svc
where
    Svc: Service<Incoming, Response = (), Error = HandlerError> + Clone + Send + 'static,
    Svc::Future: Send + 'static,
{
    fn into_consumer_service(
        self,
        _state: S,
    ) -> Result<BoxCloneService<Incoming, (), HandlerError>, Error> {
        Ok(BoxCloneService::new(self))
    }
}
