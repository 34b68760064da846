//! # busway
//!
//! Publish and consume events through one broker-neutral API, on Kafka, RabbitMQ, Azure Service
//! Bus or an in-process broker chosen by configuration, with the patterns production systems need:
//! retries with backoff, durable delayed redelivery, dead-letter queues, circuit breaking and
//! idempotent consumers.
//!
//! ```
//! use std::time::Duration;
//! use busway::{Bus, DeliveryInfo, HandlerError, Json, Message, State};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
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
//!         return Err(HandlerError::permanent("no such order"));
//!     }
//!     println!("bill order {} in {} (delivery {})", evt.order, billing.currency, info.attempt);
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> busway::Result<()> {
//! let bus = Bus::memory();
//! let consumer = bus
//!     .consumer("orders", "billing")
//!     .state(Billing { currency: "EUR" })
//!     .start(bill)
//!     .await?;
//! bus.publish("orders", Message::builder("/shop", "shop.order.placed.v1")
//!     .json(&OrderPlaced { order: 42 })?
//!     .build()?).await?;
//! # tokio::time::sleep(Duration::from_millis(50)).await;
//! consumer.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The broker comes from [`BusConfig`]: a `busway.toml` file and `BUSWAY_*` environment
//! variables, so the same application runs on every broker. Adapters are cargo features:
//! `memory` (default), `rabbitmq`, `kafka`, `servicebus`; `schema` adds typed, versioned events
//! ([`busway-schema`](https://docs.rs/busway-schema)).

mod bus;
mod config;

pub use bus::Bus;
pub use config::{BrokerKind, BusConfig, ConsumerDefaults, DedupConfig};

pub use busway_core::*;

/// The Kafka adapter.
#[cfg(feature = "kafka")]
pub use busway_kafka as kafka;
/// The in-process broker.
#[cfg(feature = "memory")]
pub use busway_memory as memory;
/// The RabbitMQ adapter.
#[cfg(feature = "rabbitmq")]
pub use busway_rabbitmq as rabbitmq;
/// Typed events, codecs, schema registries, compatibility checks and upcasting.
#[cfg(feature = "schema")]
pub use busway_schema as schema;
/// The Azure Service Bus adapter.
#[cfg(feature = "servicebus")]
pub use busway_servicebus as servicebus;
