//! # busway-core
//!
//! The broker-neutral heart of busway: the CloudEvents [`Message`] envelope, the [`Publisher`] and
//! [`Subscriber`] traits adapters implement, [`Delivery`] settlement, the [`DeadLetters`]
//! capability, classified [`Error`]s, and the [`Consumer`] runtime with its middleware (retry,
//! redelivery, dead-lettering, circuit breaker, dedup, timeout, tracing and metrics).
//!
//! This crate knows no broker. Adapters (`busway-memory`, `busway-rabbitmq`, `busway-kafka`,
//! `busway-servicebus`) depend on it; applications usually depend on the `busway` facade.

pub mod broker;
pub mod consumer;
pub mod dead_letter;
pub mod delivery;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
pub mod idempotency;
pub mod message;
pub mod middleware;
pub mod policy;
pub mod preflight;
pub mod redelivery;
pub mod wire;

pub use broker::{
    Broker, Capabilities, Ordering, Publisher, Scheduler, StartPosition, SubscribeOptions,
    Subscriber, Subscription,
};
pub use consumer::{
    AlertHook, Consumer, ConsumerBuilder, ConsumerHandle, ConsumerHealth, ConsumerReport,
    ConsumerStats, DeadLetterAlert,
};
pub use dead_letter::{
    DeadLetter, DeadLetterMetadata, DeadLetterQueue, DeadLetterReason, DeadLetters,
};
pub use delivery::{Delivery, DeliveryInfo, Settle, Settlement};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use handler::{
    Attributes, Data, Extension, Extensions, FailureKind, FromIncoming, FromRef, Handler,
    HandlerError, HandlerFn, HandlerService, Incoming, IntoConsumerService, IntoOutcome, Json,
    JsonRejection, Outcome, ResultExt, Router, RouterService, State, handler_fn,
};
pub use idempotency::{Claim, IdempotencyStore, MemoryIdempotencyStore};
pub use message::{Message, MessageBuilder};
pub use middleware::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
pub use policy::{Backoff, RedeliveryPolicy, RetryPolicy};
