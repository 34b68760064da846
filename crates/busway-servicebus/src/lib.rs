//! # busway-servicebus
//!
//! busway's Azure Service Bus adapter, on the [`azservicebus`] client (AMQP 1.0): real
//! namespaces over TLS (connection string, shared access key, or an Entra ID token credential),
//! emulators over plain AMQP.
//!
//! ```no_run
//! use busway_core::{Consumer, Message, Publisher, handler_fn};
//! use busway_servicebus::{ServiceBusBroker, ServiceBusConfig};
//! use std::sync::Arc;
//!
//! # async fn demo() -> busway_core::Result<()> {
//! let broker = ServiceBusBroker::connect(ServiceBusConfig::from_connection_string(
//!     "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true",
//! ))
//! .await?;
//! let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
//!     .concurrency(8)
//!     .start(handler_fn(|m: Message| async move {
//!         println!("{}", m.id());
//!         Ok(())
//!     }))
//!     .await?;
//! broker.publish("orders", Message::builder("/shop", "order.placed").data("42").build()?).await?;
//! consumer.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## Mapping
//!
//! | busway | Service Bus |
//! |---|---|
//! | topic | topic (or a queue listed in [`ServiceBusConfig::queues`], point to point) |
//! | group | subscription `<topic>/Subscriptions/<group>` |
//! | message | CloudEvents AMQP binding, binary mode: `cloudEvents_*` application properties, AMQP content type, Data body; MessageId = event id, SessionId = partition key, CorrelationId = `correlationid` |
//! | ack | complete |
//! | redeliver now | abandon (the broker counts the delivery) |
//! | redeliver after a delay | schedule a copy for then, carrying `busway-attempt` and `busway-first-failure`, addressed to the group with `busway-group`; then complete the original (confirmed) |
//! | dead-letter | the native dead-letter subqueue: DeadLetterReason = busway's reason code, DeadLetterErrorDescription = the error, plus the `busway-dlq-*` metadata as application properties |
//! | attempt | the broker's delivery count (plus the attempt a scheduled copy carries) |
//! | per-key ordering | sessions: the partition key is the session id; each session is handled one message at a time |
//! | dropped delivery | abandon (the broker counts the delivery) |
//! | failed settlement | the delivery stays with its handle; one whose link was lost comes back when its lock expires |
//!
//! **Entities are provisioned outside busway.** Service Bus creates topics and subscriptions only
//! through its management (ATOM/ARM) API, which AMQP clients do not reach: declare them in
//! infrastructure code, the Azure CLI, or the emulator's `Config.json`. A group that asks for
//! per-key ordering needs a subscription with `RequiresSession`. Subscribing installs two
//! routing rules on the subscription (see [`ServiceBusConfig::manage_rules`]): `busway-broadcast`
//! (`[busway-group] IS NULL`) replaces `$Default`, and `busway-direct` (`busway-group = <group>`)
//! lets delayed redeliveries and redriven dead letters reach only their group. Without Manage
//! rights the rules must be in place already; subscribing checks them and fails with a
//! configuration error naming the setting otherwise, as it does for a rule of the
//! subscription's own that would also take other groups' copies.
//!
//! ## Modules
//!
//! Every busway adapter names the same parts the same way: `connection` (the AMQP connection,
//! its credentials and reconnection), `topology` (the subscription rules busway relies on),
//! `publish` (cached senders, retried sends, the pre-publish check), `subscribe` (receivers,
//! plain and session, and the pump that owns the link and settles on it: complete, abandon,
//! scheduled copy, dead-letter subqueue) with `subscribe::settle` (the handle that asks it), `dead_letters` (list, peek, redrive, purge),
//! `codec` (the CloudEvents AMQP binding), `error` (client errors classified into busway's),
//! `config`, `broker` (the handle) and `fuzzing` (behind the `fuzzing` feature).
//!
//! A subscription holds what arrived since it was created; the topic keeps no log to replay, so
//! [`StartPosition::Earliest`](busway_core::StartPosition) fails at `subscribe` with a
//! configuration error naming `start_position`.
//!
//! Plain AMQP (emulators) is used only towards a loopback address unless
//! [`ServiceBusConfig::insecure`] allows otherwise (logged at WARN).
//!
//! Locks are renewed while a delivery is unsettled (up to [`ServiceBusConfig::lock_renewal`]);
//! messages are received one at a time, at most the subscription's prefetch unsettled at once,
//! so nothing sits locked in a client-side buffer. A lost connection is recovered by busway
//! itself (links reopened, publishes retried).

mod broker;
mod codec;
mod config;
mod connection;
mod dead_letters;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod publish;
mod subscribe;
mod topology;

pub use azure_core::credentials::TokenCredential;
pub use broker::ServiceBusBroker;
pub use config::{STANDARD_MAX_MESSAGE_BYTES, ServiceBusConfig};

/// Application property carrying the attempt number of a scheduled redelivery copy.
pub const ATTEMPT_PROPERTY: &str = codec::ATTEMPT;
/// Application property carrying the first failure time of a redelivered message.
pub const FIRST_FAILURE_PROPERTY: &str = codec::FIRST_FAILURE;
/// Application property addressing a copy to one group (matched by its `busway-direct` rule).
pub const GROUP_PROPERTY: &str = codec::TARGET_GROUP;
