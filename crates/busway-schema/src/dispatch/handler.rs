//! Which event a handler takes, read from its first argument.

use busway_core::Handler;

use super::extract::Event;
use crate::event::EventType;

/// A busway-core [`Handler`] whose first argument is [`Event<E>`]: what
/// [`EventRouter::on`](super::EventRouter::on) takes. It names `E`, so the router knows the
/// CloudEvents type to route and the version the handler reads; the core `Handler` does the
/// rest (extracting every argument, turning the result into an outcome).
///
/// Implemented for every async function `Fn(Event<E>, T2, .., Tn)` (up to 12 arguments) whose
/// other arguments are extractors; `T` is the tuple of argument types, inferred.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler of an `Event<E>` with state `{S}`",
    label = "expected an async fn whose first argument is `Event<E>`, followed by extractors",
    note = "the other arguments must be extractors of the consumer's state `{S}` (e.g. `State<T>` with `T: FromRef<{S}>`)",
    note = "a handler without an `Event<E>` goes to `.route(type, handler)`"
)]
pub trait EventHandler<T, S>: Handler<T, S> {
    /// The event the handler takes.
    type Event: EventType;
}

macro_rules! impl_event_handler {
    ($($arg:ident),*) => {
        impl<F, Fut, S, E, $($arg,)*> EventHandler<(Event<E>, $($arg,)*), S> for F
        where
            F: FnOnce(Event<E>, $($arg),*) -> Fut + Handler<(Event<E>, $($arg,)*), S>,
            E: EventType,
        {
            type Event = E;
        }
    };
}

impl_event_handler!();
impl_event_handler!(T2);
impl_event_handler!(T2, T3);
impl_event_handler!(T2, T3, T4);
impl_event_handler!(T2, T3, T4, T5);
impl_event_handler!(T2, T3, T4, T5, T6);
impl_event_handler!(T2, T3, T4, T5, T6, T7);
impl_event_handler!(T2, T3, T4, T5, T6, T7, T8);
impl_event_handler!(T2, T3, T4, T5, T6, T7, T8, T9);
impl_event_handler!(T2, T3, T4, T5, T6, T7, T8, T9, T10);
impl_event_handler!(T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
impl_event_handler!(T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);
