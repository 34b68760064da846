//! # busway-memory
//!
//! An in-process broker: the embedded default of busway, and the reference for the semantics
//! every adapter honours. Topics fan out to groups; within a group each message goes to one
//! member; unsettled deliveries come back; redelivery can be delayed; dead letters keep their
//! metadata; buffers are bounded, so a slow consumer slows publishers down instead of growing
//! memory.
//!
//! ```
//! use busway_core::{Message, Publisher, Subscriber, SubscribeOptions, Subscription};
//! use busway_memory::MemoryBroker;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> busway_core::Result<()> {
//! let broker = MemoryBroker::new();
//! let mut sub = broker.subscribe("orders", "billing", SubscribeOptions::default()).await?;
//! broker.publish("orders", Message::builder("/shop", "order.placed").data("42").build()?).await?;
//! let delivery = sub.next().await.expect("a delivery")?;
//! assert_eq!(delivery.message().data().as_ref(), b"42");
//! delivery.ack().await?;
//! # Ok(()) }
//! ```

mod broker;
mod config;
mod dead_letters;
mod queue;

pub use broker::MemoryBroker;
pub use config::MemoryConfig;
