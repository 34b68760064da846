//! # busway-kafka
//!
//! busway's Kafka adapter, on [`rdkafka`] (librdkafka). [`KafkaBroker`] implements
//! [`Publisher`](busway_core::Publisher), [`Subscriber`](busway_core::Subscriber) and
//! [`DeadLetters`](busway_core::DeadLetters); [`KafkaConfig`] configures it.
//!
//! ## Mapping
//!
//! | busway | Kafka |
//! |---|---|
//! | topic | topic (created through the admin API when `create_topics` is on) |
//! | group | consumer group of the same name |
//! | message | record in CloudEvents binary mode: `ce_*` headers, `content-type`, data as value |
//! | partition key | record key (Kafka's partitioner keeps one key in one partition) |
//! | publish | idempotent producer, `acks=all`; returns on the delivery report |
//! | delayed redelivery | `<topic>.<group>.retry.<n>` |
//! | dead letter | `<topic>.<group>.dlq`, original record plus `busway-dlq-*` headers |
//! | scheduled delivery | `<topic>.scheduled`, held by each group until due; a group that joins later gets what falls due after it joined |
//! | circuit breaker open | assigned partitions paused |
//!
//! ## Consuming and commits
//!
//! Each subscription is one member of the consumer group (range assignment, so every member gets a
//! share of the topic itself, not only of its retry tiers). It
//! reads the topic, `<topic>.scheduled` and the group's retry tiers. Records of one partition are
//! handled in order, partitions in parallel (the delivery's `ordering_key` is the partition);
//! with [`Ordering::PerKey`](busway_core::Ordering::PerKey), records of different keys of one
//! partition run in parallel too, one key at a time.
//!
//! Offsets are committed periodically (`commit_interval`), on revoke and on close, and only up to
//! the first record of each partition still in flight: nothing is committed past it, so a crash
//! redelivers rather than loses (at-least-once; put the dedup middleware in front of side
//! effects). Only records in flight are tracked, so a record that stays unsettled for long costs
//! one entry, however many records behind it are handled meanwhile.
//!
//! Settling follows [`Settle`](busway_core::Settle)'s contract:
//!
//! - a settlement that fails (its redelivery or dead-letter copy could not be produced) leaves
//!   the record with its handle, in flight, and may be tried again;
//! - a delivery dropped unsettled (a settlement the runtime gave up on, an aborted task) is
//!   delivered again by the same subscription after a pause of one second, with its attempt
//!   counted; its offset stays in flight meanwhile, so commits wait for it but never freeze;
//! - when the partition goes to another member (rebalance, close, crash), an unsettled record
//!   is read again by the next owner from the committed offset, its attempt counted when the
//!   owner is in the same process; settling it on the old member then fails.
//!
//! A new group starts at [`StartPosition`](busway_core::StartPosition): `Latest` means the end of
//! each partition as it was when `subscribe` was called (fixed by a commit on first
//! assignment), so nothing published after `subscribe` returns is skipped. In the scheduled topic
//! it means every message that falls due after the group joined, also one scheduled before:
//! only messages published *and* due before the group joined are passed over.
//!
//! ## Failures
//!
//! - **Redelivery** after attempt `n` is a copy of the record, produced (and confirmed) to
//!   `<topic>.<group>.retry.<min(n, retry_tiers)>` with `busway-attempt`,
//!   `busway-first-failure` and `busway-due` headers before the original's offset is done. One
//!   tier per attempt (3 by default) means records of a tier wait about as long, so the head of a
//!   partition is always the first due. A record not yet due pauses only its retry partition
//!   until then; every other partition keeps flowing.
//! - **Dead letters** go to `<topic>.<group>.dlq`: the original key, value and headers plus the
//!   standard metadata headers ([`DeadLetterMetadata`](busway_core::DeadLetterMetadata)).
//!   Undecodable records reach the runtime as
//!   [`Delivery::undecodable`](busway_core::Delivery::undecodable) and are
//!   dead-lettered byte for byte (except header names that are not UTF-8, which rdkafka cannot
//!   read or write: those are left out, with a warning). Redrive and purge move a cursor (the
//!   committed offsets of the group `busway-dlq-cursor.<dlq topic>`), since records cannot be
//!   removed from a Kafka log; redriven records go to the group's first retry tier, due at once.
//!   Redrive pages through the queue (500 records or 16 MiB a page, the cursor committed after
//!   each), so its memory is bounded and a redrive stopped half-way repeats at most one page.
//! - **Circuit breaker**: when the runtime stops pulling for `pause_after`, every assigned
//!   partition is paused (librdkafka drops its prefetch) and resumed when pulling resumes.
//! - Headroom: `publish` takes messages of up to `max_message_bytes` less
//!   [`METADATA_HEADROOM`](busway_core::preflight::METADATA_HEADROOM) (the one check of
//!   [`SizeLimit`](busway_core::preflight::SizeLimit)); a larger one fails with
//!   [`Error::TooLarge`](busway_core::Error::TooLarge) before anything is sent. So every message
//!   busway publishes can be redelivered and dead-lettered, metadata and all, by brokers whose
//!   `message.max.bytes` is `max_message_bytes`.
//!
//! ## Modules
//!
//! Every busway adapter names the same parts the same way: `topology` (topic names: retry
//! tiers, dead-letter and scheduled topics, cursor groups), `publish` (the idempotent producer
//! and the pre-publish check), `subscribe` (one consumer per subscription: its driver, the
//! offset ledger, pause state) with `subscribe::settle` (redelivery and dead-letter copies),
//! `dead_letters` (list, peek, redrive, purge), `codec` (CloudEvents binary mode on records),
//! `error` (rdkafka errors classified into busway's), `config`, `broker` (the handle) and
//! `fuzzing` (behind the `fuzzing` feature). There is no `connection` module: librdkafka owns
//! the connections of each producer and consumer.
//!
//! ## Records from other clients
//!
//! A record with a key and no `partitionkey` attribute (as the official CloudEvents SDKs write
//! it) is read with its key as `partitionkey`. A header name that is not UTF-8 is left out
//! (rdkafka 0.39 panics on one; busway catches that and reads on).
//!
//! ## Secrets
//!
//! `Debug` and errors never show a password, nor the value of any `extra` property that may hold
//! a secret ([`is_secret_property`]: every `sasl.*`/`ssl.*` setting but a few known-public ones,
//! and names that say secret anywhere else). Turning certificate checks off through `extra`, or
//! SASL without TLS to a remote broker, is logged as a warning naming the setting.

mod broker;
mod codec;
mod config;
mod dead_letters;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod publish;
mod subscribe;
mod topology;

pub use broker::KafkaBroker;
pub use config::{
    KafkaConfig, SaslMechanism, SecurityConfig, SecurityProtocol, is_secret_property,
};
