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
//! | scheduled delivery | `<topic>.scheduled`, held by each group until due |
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
//! the highest *contiguous* settled offset of each partition: nothing is committed past a record
//! still in flight, so a crash redelivers rather than loses (at-least-once; put the dedup
//! middleware in front of side effects). An unsettled delivery that is dropped is never marked
//! done, so it is read again after a restart or rebalance, with its attempt increased.
//!
//! A new group starts at [`StartPosition`](busway_core::StartPosition): `Latest` means the end of
//! each partition as it was when `subscribe` was called (fixed by a commit on first
//! assignment), so nothing published after `subscribe` returns is skipped.
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
//!   Undecodable records reach the runtime as deliveries with `decode_error` set and are
//!   dead-lettered byte for byte. Redrive and purge move a cursor (the committed offsets of the
//!   group `busway-dlq-cursor.<dlq topic>`), since records cannot be removed from a Kafka log;
//!   redriven records go to the group's first retry tier, due at once.
//! - **Circuit breaker**: when the runtime stops pulling for `pause_after`, every assigned
//!   partition is paused (librdkafka drops its prefetch) and resumed when pulling resumes.
//! - A publish too large for `max_message_bytes` fails with
//!   [`Error::TooLarge`](busway_core::Error::TooLarge) before anything is sent.

mod broker;
mod codec;
mod config;
mod consumer;
mod dead_letters;
mod error;
mod names;
mod producer;

pub use broker::KafkaBroker;
pub use config::{
    KafkaConfig, SaslMechanism, SecurityConfig, SecurityProtocol, is_secret_property,
};
