//! An in-memory AMQP 1.0 server faithful to Azure Service Bus, so the unmodified `azservicebus`
//! client can be tested without Azure or Docker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use busway_sb_emulator::{Emulator, QueueConfig};
//!
//! let emulator = Emulator::builder()
//!     .queue(QueueConfig::new("orders"))
//!     .start()
//!     .await?;
//! println!("{}", emulator.connection_string());
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See the crate README for the parity table with the official emulator.

mod amqp;
mod cbs;
pub mod config;
mod connection;
mod entity;
pub mod error;
mod filter;
#[doc(hidden)]
pub mod fuzzing;
mod link;
mod management;
mod server;
mod wire;

pub use config::{
    CorrelationFilter, DuplicateDetection, EntityProperties, NamespaceConfig, QueueConfig,
    RuleConfig, RuleFilter, SubscriptionConfig, TopicConfig,
};
pub use entity::Limits;
pub use error::{ConfigError, EmulatorError, KeyError};
pub use server::{
    DEFAULT_SAS_KEY, DEFAULT_SAS_KEY_NAME, Emulator, EmulatorBuilder, EmulatorHandle, KEY_ENV,
    REDACTED, check_key_for_host, load_key,
};
