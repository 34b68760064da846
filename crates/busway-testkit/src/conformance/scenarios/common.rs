//! What the scenarios share: imports, joining a group, and the sentinel check.

pub(super) use std::collections::{BTreeMap, HashSet};
pub(super) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
pub(super) use std::sync::{Arc, Mutex};
pub(super) use std::time::Duration;

pub(super) use busway_core::{
    Backoff, DeadLetterReason, ErrorKind, HandlerError, MemoryIdempotencyStore, Message,
    RedeliveryPolicy, RetryPolicy, SubscribeOptions, handler_fn,
};
pub(super) use chrono::{TimeZone, Utc};
pub(super) use tokio::time::Instant;

pub(super) use crate::conformance::Harness;
pub(super) use crate::conformance::support::{
    Recorder, consumer, eventually, finish_when, next_delivery, number_of, numbered, publish, stop,
    unique,
};

/// Joins a group before anything is published, so the group sees every later message.
pub(super) async fn join(
    h: &Harness,
    topic: &str,
    group: &str,
) -> Box<dyn busway_core::Subscription> {
    h.subscriber
        .subscribe(topic, group, SubscribeOptions::default())
        .await
        .expect("subscribe")
}

/// Asserts that the next delivery of `sub` is `sentinel`: nothing else is left in the group.
pub(super) async fn assert_next_is(
    h: &Harness,
    topic: &str,
    sub: &mut Box<dyn busway_core::Subscription>,
    sentinel: Message,
) {
    publish(h, topic, sentinel.clone()).await;
    let d = next_delivery(sub, h.expect.patience).await;
    assert_eq!(
        d.message().id(),
        sentinel.id(),
        "expected nothing before the sentinel"
    );
    d.ack().await.expect("ack sentinel");
}
