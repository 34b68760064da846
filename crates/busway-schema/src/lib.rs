//! Schemas for busway: typed events, codecs, schema registries, compatibility checks and upcasting.
//!
//! Schemas are the contract between producers and consumers. This crate makes that contract
//! enforceable on both sides and lets an event type evolve without breaking either:
//!
//! - [`schema`]: a schema (format + definition), registered schemas, compatibility modes.
//! - [`compat`]: compatibility rules for Avro, JSON Schema and Protobuf, and the check every
//!   registry runs on registration; [`compat::assert_compatible`] is for users' own tests.
//! - [`registry`]: the [`SchemaRegistry`] trait and its implementations (in memory, a directory
//!   kept in git, the Confluent Schema Registry REST API).
//! - [`event`]: the [`EventType`] trait (CloudEvents type, version, subject, codec) and how the
//!   version travels in `dataschema` ([`DataSchema`]).
//! - [`codec`]: JSON, JSON Schema, Avro and Protobuf codecs.
//! - [`publish`]: the [`EventPublisher`]: resolve the schema, validate, encode, publish.
//! - [`dispatch`]: the [`Event<E>`] handler extractor (decoded, validated, upcast) and the
//!   [`EventRouter`], busway-core's router for handlers taking it.
//! - [`upcast`]: turning older versions of an event into the one a handler takes.
//!
//! The crate's README walks through the workflow; `examples/versioned_events.rs` runs it on the
//! in-process broker.

pub mod codec;
pub mod compat;
pub mod dispatch;
pub mod error;
pub mod event;
pub mod publish;
pub mod registry;
pub mod schema;
pub mod upcast;

pub use compat::{CompatibilityReport, Incompatibility};
pub use dispatch::{Event, EventHandler, EventRejection, EventRouter, EventRouterService};
pub use error::SchemaError;
pub use event::{DataSchema, EventType};
pub use publish::EventPublisher;
pub use registry::SchemaRegistry;
pub use schema::{CompatibilityMode, RegisteredSchema, Schema, SchemaFormat};
