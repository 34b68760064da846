//! The scenarios. Each takes a fresh [`Harness`] and panics when the adapter misbehaves.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busway_core::{
    Backoff, DeadLetterReason, ErrorKind, HandlerError, MemoryIdempotencyStore, Message,
    RedeliveryPolicy, RetryPolicy, SubscribeOptions, handler_fn,
};
use chrono::{TimeZone, Utc};
use tokio::time::Instant;

use super::Harness;
use super::support::{
    Recorder, consumer, eventually, finish_when, next_delivery, number_of, numbered, publish, stop,
    unique,
};

/// Every scenario, by name. Adapters run each or skip it with a reason.
pub const SCENARIOS: &[&str] = {
    macro_rules! names {
        ($($name:ident),*) => { &[$(stringify!($name)),*] };
    }
    crate::__conformance_scenarios!(names)
};

/// Joins a group before anything is published, so the group sees every later message.
async fn join(h: &Harness, topic: &str, group: &str) -> Box<dyn busway_core::Subscription> {
    h.subscriber
        .subscribe(topic, group, SubscribeOptions::default())
        .await
        .expect("subscribe")
}

/// Asserts that the next delivery of `sub` is `sentinel`: nothing else is left in the group.
async fn assert_next_is(
    h: &Harness,
    topic: &str,
    sub: &mut Box<dyn busway_core::Subscription>,
    sentinel: Message,
) {
    publish(h, topic, sentinel.clone()).await;
    let d = next_delivery(sub, h.capabilities.patience).await;
    assert_eq!(
        d.message().id(),
        sentinel.id(),
        "expected nothing before the sentinel"
    );
    d.ack().await.expect("ack sentinel");
}

/// Every attribute, a binary payload with all 256 byte values, arrives unchanged.
pub async fn round_trip_preserves_attributes(h: Harness) {
    let topic = unique("roundtrip");
    let mut sub = join(&h, &topic, "g").await;
    let time = Utc
        .timestamp_opt(1_767_225_600, 123_456_789)
        .single()
        .expect("valid time");
    let binary = Message::builder("https://example.com/orders", "com.example.order.placed.v2")
        .id("order-7f3a-0001")
        .subject("orders/7f3a")
        .dataschema("https://example.com/schemas/order-placed/2")
        .datacontenttype("application/octet-stream")
        .time(time)
        .partition_key("customer-42")
        .correlation_id("corr-1")
        .extension("causationid", "cause-1")
        .extension(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .extension("tracestate", "vendor=opaque")
        .extension("tenant", "acme")
        .data((0u8..=255).collect::<Vec<u8>>())
        .build()
        .expect("valid message");
    let json = Message::builder("/busway/conformance", "json.event")
        .json(&serde_json::json!({"text": "grüße ✓", "n": [1, 2.5, null]}))
        .expect("json")
        .build()
        .expect("valid message");
    let minimal = Message::from_wire("min-1", "/s", "minimal")
        .build()
        .expect("valid message");
    for m in [&binary, &json, &minimal] {
        publish(&h, &topic, m.clone()).await;
    }
    let mut got = BTreeMap::new();
    for _ in 0..3 {
        let d = next_delivery(&mut sub, h.capabilities.patience).await;
        got.insert(d.message().id().to_owned(), d.message().clone());
        assert_eq!(d.info().topic, topic);
        assert_eq!(d.info().group, "g");
        assert_eq!(d.attempt(), 1);
        d.ack().await.expect("ack");
    }
    for m in [binary, json, minimal] {
        assert_eq!(
            got.get(m.id()),
            Some(&m),
            "message {} changed in transit",
            m.id()
        );
    }
}

/// A group receives the messages of its topic and nothing of another topic.
pub async fn topic_isolation(h: Harness) {
    let (a, b) = (unique("iso-a"), unique("iso-b"));
    let mut sub_a = join(&h, &a, "g").await;
    let mut sub_b = join(&h, &b, "g").await;
    let for_a: Vec<_> = (0..3).map(numbered).collect();
    let for_b: Vec<_> = (10..12).map(numbered).collect();
    for m in &for_b {
        publish(&h, &b, m.clone()).await;
    }
    for m in &for_a {
        publish(&h, &a, m.clone()).await;
    }
    let mut seen_a = HashSet::new();
    for _ in 0..3 {
        let d = next_delivery(&mut sub_a, h.capabilities.patience).await;
        seen_a.insert(d.message().id().to_owned());
        d.ack().await.expect("ack");
    }
    let want_a: HashSet<_> = for_a.iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(
        seen_a, want_a,
        "topic a delivered messages of another topic"
    );
    assert_next_is(&h, &a, &mut sub_a, numbered(99)).await;
    let mut seen_b = HashSet::new();
    for _ in 0..2 {
        let d = next_delivery(&mut sub_b, h.capabilities.patience).await;
        seen_b.insert(d.message().id().to_owned());
        d.ack().await.expect("ack");
    }
    let want_b: HashSet<_> = for_b.iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(seen_b, want_b);
}

/// Two members of one group share the messages; each message is handled once.
pub async fn competing_consumers(h: Harness) {
    let topic = unique("compete");
    let (first, second) = (Recorder::default(), Recorder::default());
    let slow = |rec: Recorder| {
        handler_fn(move |m: Message| {
            let rec = rec.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                rec.record(m);
                Ok::<_, HandlerError>(())
            }
        })
    };
    let c1 = consumer(&h, &topic, "workers")
        .concurrency(1)
        .start(slow(first.clone()))
        .await
        .expect("start");
    let c2 = consumer(&h, &topic, "workers")
        .concurrency(1)
        .start(slow(second.clone()))
        .await
        .expect("start");
    let n = 40;
    for i in 0..n {
        let m = Message::builder("/c", "t")
            .partition_key(format!("k{i}"))
            .json(&i)
            .expect("json")
            .build()
            .expect("valid");
        publish(&h, &topic, m).await;
    }
    let total = || first.len() + second.len();
    eventually(h.capabilities.patience, "every message handled", || {
        total() >= n
    })
    .await;
    tokio::time::sleep(h.capabilities.quiet_period).await;
    let ids: Vec<String> = first
        .messages()
        .iter()
        .chain(second.messages().iter())
        .map(|m| m.id().to_owned())
        .collect();
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), n, "a message was handled twice or lost");
    assert_eq!(distinct.len(), n);
    if h.capabilities.members_share_load {
        assert!(
            !first.is_empty() && !second.is_empty(),
            "both members should get work: {} / {}",
            first.len(),
            second.len()
        );
    }
    stop(c1).await;
    stop(c2).await;
}

/// Every group of a topic receives every message.
pub async fn fan_out_to_groups(h: Harness) {
    let topic = unique("fanout");
    let recorders: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let mut handles = Vec::new();
    for (i, rec) in recorders.iter().enumerate() {
        handles.push(
            consumer(&h, &topic, &format!("group-{i}"))
                .start(rec.handler())
                .await
                .expect("start"),
        );
    }
    let sent: HashSet<String> = {
        let mut ids = HashSet::new();
        for i in 0..10 {
            let m = numbered(i);
            ids.insert(m.id().to_owned());
            publish(&h, &topic, m).await;
        }
        ids
    };
    for rec in &recorders {
        rec.wait_for(10, h.capabilities.patience).await;
    }
    tokio::time::sleep(h.capabilities.quiet_period).await;
    for rec in &recorders {
        let got: Vec<String> = rec.messages().iter().map(|m| m.id().to_owned()).collect();
        assert_eq!(got.len(), 10, "a group got a message twice");
        assert_eq!(got.into_iter().collect::<HashSet<_>>(), sent);
    }
    for handle in handles {
        stop(handle).await;
    }
}

/// With per-key ordering, messages of one key are handled in publish order, even with
/// concurrency and handlers of varying duration.
pub async fn order_per_key(h: Harness) {
    let topic = unique("order");
    let seen: Arc<Mutex<BTreeMap<String, Vec<usize>>>> = Arc::default();
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let overlap = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (seen, in_flight, overlap) = (seen.clone(), in_flight.clone(), overlap.clone());
        handler_fn(move |m: Message| {
            let (seen, in_flight, overlap) = (seen.clone(), in_flight.clone(), overlap.clone());
            async move {
                let key = m.partition_key().unwrap_or_default().to_owned();
                if !in_flight.lock().unwrap().insert(key.clone()) {
                    overlap.fetch_add(1, AtomicOrdering::SeqCst);
                }
                let n = number_of(&m);
                tokio::time::sleep(Duration::from_millis((n % 3) as u64 * 5)).await;
                seen.lock().unwrap().entry(key.clone()).or_default().push(n);
                in_flight.lock().unwrap().remove(&key);
                Ok::<_, HandlerError>(())
            }
        })
    };
    let c = consumer(&h, &topic, "ordered")
        .ordered_by_key()
        .concurrency(8)
        .start(handler)
        .await
        .expect("start");
    let keys = ["alpha", "beta", "gamma"];
    let per_key = 20;
    for i in 0..per_key * keys.len() {
        let key = keys[i % keys.len()];
        let m = Message::builder("/order", "seq")
            .partition_key(key)
            .json(&serde_json::json!({ "n": i }))
            .expect("json")
            .build()
            .expect("valid");
        publish(&h, &topic, m).await;
    }
    eventually(h.capabilities.patience, "all keyed messages", || {
        seen.lock().unwrap().values().map(Vec::len).sum::<usize>() >= per_key * keys.len()
    })
    .await;
    stop(c).await;
    let seen = seen.lock().unwrap();
    for key in keys {
        let got = &seen[key];
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, &sorted, "key {key} handled out of order");
        assert_eq!(got.len(), per_key, "key {key} lost or duplicated messages");
    }
    assert_eq!(
        overlap.load(AtomicOrdering::SeqCst),
        0,
        "two messages of one key ran at once"
    );
}

/// An acked message is gone; a nacked one comes back with its attempt number increased.
pub async fn ack_removes_nack_redelivers(h: Harness) {
    let topic = unique("acknack");
    let mut sub = join(&h, &topic, "g").await;
    let (acked, nacked) = (numbered(1), numbered(2));
    publish(&h, &topic, acked.clone()).await;
    publish(&h, &topic, nacked.clone()).await;
    let mut redelivered = None;
    for _ in 0..2 {
        let d = next_delivery(&mut sub, h.capabilities.patience).await;
        assert_eq!(d.attempt(), 1);
        if d.message().id() == acked.id() {
            d.ack().await.expect("ack");
        } else {
            d.redeliver(Duration::ZERO).await.expect("nack");
        }
    }
    while redelivered.is_none() {
        let d = next_delivery(&mut sub, h.capabilities.patience).await;
        assert_ne!(d.message().id(), acked.id(), "an acked message came back");
        assert_eq!(d.message(), &nacked);
        assert_eq!(
            d.attempt(),
            2,
            "redelivery must count as the second attempt"
        );
        redelivered = Some(d.message().id().to_owned());
        d.ack().await.expect("ack");
    }
    assert_next_is(&h, &topic, &mut sub, numbered(3)).await;
}

/// Transient failures are retried in process; the third attempt succeeds; nothing is
/// redelivered or dead-lettered.
pub async fn in_process_retry_then_success(h: Harness) {
    let topic = unique("retry");
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = calls.clone();
        handler_fn(move |_m: Message| {
            let calls = calls.clone();
            async move {
                if calls.fetch_add(1, AtomicOrdering::SeqCst) < 2 {
                    Err(HandlerError::transient("dependency warming up"))
                } else {
                    Ok(())
                }
            }
        })
    };
    let c = consumer(&h, &topic, "g")
        .retry(RetryPolicy::fixed(Duration::from_millis(20), 4))
        .redelivery(RedeliveryPolicy::new(1, Backoff::Immediate))
        .start(handler)
        .await
        .expect("start");
    publish(&h, &topic, numbered(1)).await;
    let report = finish_when(&h, c, "the message to be acked", |s| s.acked == 1).await;
    assert_eq!(
        calls.load(AtomicOrdering::SeqCst),
        3,
        "exactly three attempts"
    );
    assert_eq!(report.stats.redelivered, 0);
    assert_eq!(report.stats.dead_lettered, 0);
    assert_eq!(report.stats.received, 1, "the broker delivered it once");
    let dead = h.dead_letters.peek(&topic, "g", 10).await.expect("peek");
    assert!(dead.is_empty());
}

/// A failed message comes back no earlier than the redelivery delay, and does not hold up the
/// messages behind it.
pub async fn delayed_redelivery_honoured(h: Harness) {
    let topic = unique("delay");
    let delay = Duration::from_secs(2);
    let failing = numbered(1);
    let failing_id = failing.id().to_owned();
    let rec = Recorder::default();
    let attempts: Arc<Mutex<Vec<(Instant, u32)>>> = Arc::default();
    let handler = {
        let (rec, attempts, failing_id) = (rec.clone(), attempts.clone(), failing_id.clone());
        handler_fn(move |inc: busway_core::Incoming| {
            let (rec, attempts, failing_id) = (rec.clone(), attempts.clone(), failing_id.clone());
            async move {
                if inc.message.id() == failing_id {
                    attempts
                        .lock()
                        .unwrap()
                        .push((Instant::now(), inc.info.attempt));
                    if inc.info.attempt == 1 {
                        return Err(HandlerError::transient("not yet"));
                    }
                }
                rec.record(inc.message);
                Ok(())
            }
        })
    };
    let c = consumer(&h, &topic, "g")
        .redelivery(RedeliveryPolicy::new(3, Backoff::Fixed { delay }))
        .start(handler)
        .await
        .expect("start");
    publish(&h, &topic, failing).await;
    eventually(h.capabilities.patience, "the first attempt", || {
        !attempts.lock().unwrap().is_empty()
    })
    .await;
    let healthy = numbered(2);
    publish(&h, &topic, healthy.clone()).await;
    rec.wait_for(2, h.capabilities.patience).await;
    stop(c).await;
    let order: Vec<String> = rec.messages().iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(
        order,
        vec![healthy.id().to_owned(), failing_id],
        "the waiting message blocked the next one"
    );
    let attempts = attempts.lock().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!((attempts[0].1, attempts[1].1), (1, 2));
    let waited = attempts[1].0 - attempts[0].0;
    assert!(
        waited + h.capabilities.timing_tolerance >= delay,
        "redelivered after {waited:?}, before the {delay:?} delay"
    );
}

/// A message that always fails is dead-lettered after exactly N deliveries, with complete
/// metadata and unchanged, while healthy messages keep flowing; the alert hook fires once.
pub async fn poison_message_dead_lettered_after_n_attempts(h: Harness) {
    let topic = unique("poison");
    let poison = Message::builder("/poison", "poison.pill")
        .extension("tenant", "acme")
        .data(vec![0xde, 0xad, 0xbe, 0xef])
        .build()
        .expect("valid");
    let poison_id = poison.id().to_owned();
    let poison_calls = Arc::new(AtomicUsize::new(0));
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let healthy = Recorder::default();
    let handler = {
        let (calls, healthy, poison_id) =
            (poison_calls.clone(), healthy.clone(), poison_id.clone());
        handler_fn(move |m: Message| {
            let (calls, healthy, poison_id) = (calls.clone(), healthy.clone(), poison_id.clone());
            async move {
                if m.id() == poison_id {
                    calls.fetch_add(1, AtomicOrdering::SeqCst);
                    return Err(HandlerError::transient("downstream rejects this one"));
                }
                healthy.record(m);
                Ok(())
            }
        })
    };
    let c = consumer(&h, &topic, "g")
        .concurrency(4)
        .redelivery(RedeliveryPolicy::new(
            3,
            Backoff::Fixed {
                delay: Duration::from_millis(100),
            },
        ))
        .on_dead_letter({
            let alerts = alerts.clone();
            move |a| alerts.lock().unwrap().push(a.clone())
        })
        .start(handler)
        .await
        .expect("start");
    publish(&h, &topic, poison.clone()).await;
    for i in 0..10 {
        publish(&h, &topic, numbered(i)).await;
    }
    healthy.wait_for(10, h.capabilities.patience).await;
    finish_when(&h, c, "the poison message to be dead-lettered", |s| {
        s.dead_lettered == 1
    })
    .await;
    assert_eq!(
        poison_calls.load(AtomicOrdering::SeqCst),
        3,
        "exactly three deliveries"
    );
    let dead = h.dead_letters.peek(&topic, "g", 10).await.expect("peek");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].message, poison,
        "the dead letter must be the original message"
    );
    let meta = dead[0].metadata.as_ref().expect("busway metadata");
    assert_eq!(meta.reason, DeadLetterReason::MaxAttemptsExceeded);
    assert_eq!(meta.attempts, 3);
    assert_eq!(meta.original_topic, topic);
    assert_eq!(meta.group, "g");
    assert!(
        meta.error.contains("downstream rejects this one"),
        "{}",
        meta.error
    );
    assert!(meta.first_failure < meta.last_failure);
    let alerts = alerts.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].message_id, poison_id);
    let queues = h.dead_letters.list().await.expect("list");
    assert!(
        queues
            .iter()
            .any(|q| q.topic == topic && q.group == "g" && q.depth == 1),
        "{queues:?}"
    );
}

/// A permanent error dead-letters at once, after one attempt.
pub async fn permanent_error_dead_lettered_at_once(h: Harness) {
    let topic = unique("permanent");
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = calls.clone();
        handler_fn(move |_m: Message| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, AtomicOrdering::SeqCst);
                Err(HandlerError::permanent("order 0 does not exist"))
            }
        })
    };
    let c = consumer(&h, &topic, "g")
        .retry(RetryPolicy::fixed(Duration::from_millis(10), 5))
        .start(handler)
        .await
        .expect("start");
    let m = numbered(0);
    publish(&h, &topic, m.clone()).await;
    finish_when(&h, c, "dead-lettering", |s| s.dead_lettered == 1).await;
    assert_eq!(
        calls.load(AtomicOrdering::SeqCst),
        1,
        "a permanent error must not be retried"
    );
    let dead = h.dead_letters.peek(&topic, "g", 10).await.expect("peek");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message, m);
    let meta = dead[0].metadata.as_ref().expect("metadata");
    assert_eq!(meta.reason, DeadLetterReason::PermanentError);
    assert_eq!(meta.attempts, 1);
    assert!(meta.error.contains("order 0 does not exist"));
}

/// A delivery its consumer never settled comes back to another member once the first is gone.
pub async fn unacked_redelivered_after_consumer_dies(h: Harness) {
    let topic = unique("dies");
    let mut first = join(&h, &topic, "g").await;
    let m = numbered(1);
    publish(&h, &topic, m.clone()).await;
    let d = next_delivery(&mut first, h.capabilities.patience).await;
    assert_eq!(d.message(), &m);
    // The consumer dies: neither the delivery nor the subscription is settled or closed.
    drop(d);
    drop(first);
    let mut second = join(&h, &topic, "g").await;
    let again = next_delivery(&mut second, h.capabilities.patience).await;
    assert_eq!(again.message(), &m);
    assert!(
        again.attempt() >= 2,
        "redelivery must count attempts, got {}",
        again.attempt()
    );
    again.ack().await.expect("ack");
}

/// Messages published while a group has no consumer wait for it; a new consumer continues
/// where the old one stopped, losing and repeating nothing.
pub async fn resume_after_close_without_loss(h: Harness) {
    let topic = unique("resume");
    let before = Recorder::default();
    let c = consumer(&h, &topic, "g")
        .start(before.handler())
        .await
        .expect("start");
    for i in 0..10 {
        publish(&h, &topic, numbered(i)).await;
    }
    before.wait_for(10, h.capabilities.patience).await;
    stop(c).await;
    for i in 10..20 {
        publish(&h, &topic, numbered(i)).await;
    }
    let after = Recorder::default();
    let c = consumer(&h, &topic, "g")
        .start(after.handler())
        .await
        .expect("start");
    after.wait_for(10, h.capabilities.patience).await;
    tokio::time::sleep(h.capabilities.quiet_period).await;
    stop(c).await;
    let mut got: Vec<usize> = after.messages().iter().map(number_of).collect();
    got.sort_unstable();
    assert_eq!(got, (10..20).collect::<Vec<_>>());
    assert_eq!(before.len(), 10);
}

/// Many publishers at once lose nothing.
pub async fn concurrent_publishers_without_loss(h: Harness) {
    let topic = unique("concurrent");
    let rec = Recorder::default();
    let c = consumer(&h, &topic, "g")
        .concurrency(16)
        .start(rec.handler())
        .await
        .expect("start");
    let (publishers, each) = (4, 50);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (publisher, topic) = (h.publisher.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                publisher
                    .publish(&topic, numbered(p * each + i))
                    .await
                    .expect("publish");
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher task");
    }
    rec.wait_for(publishers * each, h.capabilities.patience)
        .await;
    tokio::time::sleep(h.capabilities.quiet_period).await;
    stop(c).await;
    let mut got: Vec<usize> = rec.messages().iter().map(number_of).collect();
    got.sort_unstable();
    assert_eq!(got, (0..publishers * each).collect::<Vec<_>>());
}

fn sized(bytes: usize) -> Message {
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    Message::builder("/size", "sized")
        .datacontenttype("application/octet-stream")
        .data(data)
        .build()
        .expect("valid")
}

/// A large message under the limit arrives intact.
pub async fn large_message_round_trips(h: Harness) {
    let topic = unique("large");
    let mut sub = join(&h, &topic, "g").await;
    let m = sized(h.capabilities.large_message_bytes);
    publish(&h, &topic, m.clone()).await;
    let d = next_delivery(&mut sub, h.capabilities.patience).await;
    assert_eq!(d.message(), &m);
    d.ack().await.expect("ack");
}

/// A message over the limit is refused with a clear error before it is sent.
pub async fn oversized_message_refused(h: Harness) {
    let topic = unique("oversized");
    let mut sub = join(&h, &topic, "g").await;
    let m = sized(h.capabilities.max_message_bytes + 1);
    let err = h
        .publisher
        .publish(&topic, m)
        .await
        .expect_err("an oversized message must be refused");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert_next_is(&h, &topic, &mut sub, numbered(1)).await;
}

/// The same message published twice has its side effect once behind the dedup middleware.
pub async fn duplicate_publish_absorbed_by_dedup(h: Harness) {
    let topic = unique("dedup");
    let rec = Recorder::default();
    let c = consumer(&h, &topic, "g")
        .concurrency(1)
        .dedup(Arc::new(MemoryIdempotencyStore::default()))
        .start(rec.handler())
        .await
        .expect("start");
    let m = numbered(1);
    publish(&h, &topic, m.clone()).await;
    publish(&h, &topic, m.clone()).await;
    publish(&h, &topic, numbered(2)).await;
    finish_when(&h, c, "three deliveries acked", |s| s.acked == 3).await;
    let ids: Vec<String> = rec.messages().iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(ids.len(), 2, "the duplicate reached the handler: {ids:?}");
    assert_eq!(ids.iter().filter(|id| *id == m.id()).count(), 1);
}

/// A scheduled message arrives no earlier than its time.
pub async fn scheduled_delivery(h: Harness) {
    let topic = unique("scheduled");
    let rec = Recorder::default();
    let c = consumer(&h, &topic, "g")
        .start(rec.handler())
        .await
        .expect("start");
    let wait = Duration::from_secs(2);
    let at = Utc::now() + chrono::Duration::from_std(wait).expect("small duration");
    let started = Instant::now();
    let m = numbered(1);
    h.publisher
        .schedule(&topic, m.clone(), at)
        .await
        .expect("schedule");
    publish(&h, &topic, numbered(2)).await;
    rec.wait_for(2, h.capabilities.patience).await;
    stop(c).await;
    let timed = rec.timed();
    assert_ne!(timed[0].1.id(), m.id(), "the scheduled message came first");
    let (arrived, got) = &timed[1];
    assert_eq!(got, &m);
    let after = *arrived - started;
    assert!(
        after + h.capabilities.timing_tolerance >= wait,
        "arrived after {after:?}, scheduled for {wait:?}"
    );
}

/// Shutdown lets in-flight handlers finish and settles them; nothing comes back afterwards.
pub async fn graceful_shutdown_drains_in_flight(h: Harness) {
    let topic = unique("drain");
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (started, finished) = (started.clone(), finished.clone());
        handler_fn(move |_m: Message| {
            let (started, finished) = (started.clone(), finished.clone());
            async move {
                started.fetch_add(1, AtomicOrdering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                finished.fetch_add(1, AtomicOrdering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        })
    };
    let c = consumer(&h, &topic, "g")
        .concurrency(4)
        .prefetch(4)
        .start(handler)
        .await
        .expect("start");
    for i in 0..4 {
        publish(&h, &topic, numbered(i)).await;
    }
    eventually(h.capabilities.patience, "four handlers running", || {
        started.load(AtomicOrdering::SeqCst) == 4
    })
    .await;
    let report = stop(c).await;
    assert_eq!(
        finished.load(AtomicOrdering::SeqCst),
        4,
        "shutdown cut handlers short"
    );
    assert_eq!(report.stats.acked, 4);
    assert_eq!(report.abandoned, 0);
    let mut sub = join(&h, &topic, "g").await;
    assert_next_is(&h, &topic, &mut sub, numbered(100)).await;
}

/// A batch is delivered whole; a batch with an oversized message is refused before any of it
/// is sent.
pub async fn batch_publish(h: Harness) {
    let topic = unique("batch");
    let rec = Recorder::default();
    let c = consumer(&h, &topic, "g")
        .concurrency(16)
        .start(rec.handler())
        .await
        .expect("start");
    let batch: Vec<Message> = (0..100).map(numbered).collect();
    h.publisher
        .publish_batch(&topic, batch)
        .await
        .expect("publish batch");
    rec.wait_for(100, h.capabilities.patience).await;
    let bad = vec![
        numbered(1000),
        sized(h.capabilities.max_message_bytes + 1),
        numbered(1001),
    ];
    let err = h
        .publisher
        .publish_batch(&topic, bad)
        .await
        .expect_err("must refuse");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    publish(&h, &topic, numbered(2000)).await;
    rec.wait_for(101, h.capabilities.patience).await;
    tokio::time::sleep(h.capabilities.quiet_period).await;
    stop(c).await;
    let mut got: Vec<usize> = rec.messages().iter().map(number_of).collect();
    got.sort_unstable();
    let mut want: Vec<usize> = (0..100).collect();
    want.push(2000);
    assert_eq!(
        got, want,
        "part of a refused batch was delivered, or a message was lost"
    );
}

/// Dead letters can be listed, peeked, redriven to their group, and purged.
pub async fn dead_letters_redrive_and_purge(h: Harness) {
    let topic = unique("redrive");
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rec = Recorder::default();
    let handler = {
        let (healthy, rec) = (healthy.clone(), rec.clone());
        handler_fn(move |m: Message| {
            let (healthy, rec) = (healthy.clone(), rec.clone());
            async move {
                if !healthy.load(AtomicOrdering::SeqCst) {
                    return Err(HandlerError::permanent("not yet deployed"));
                }
                rec.record(m);
                Ok(())
            }
        })
    };
    let c = consumer(&h, &topic, "g")
        .start(handler)
        .await
        .expect("start");
    let sent: Vec<Message> = (0..3).map(numbered).collect();
    for m in &sent {
        publish(&h, &topic, m.clone()).await;
    }
    eventually(h.capabilities.patience, "three dead letters", || {
        c.stats().dead_lettered == 3
    })
    .await;
    let listed = h.dead_letters.list().await.expect("list");
    assert!(
        listed
            .iter()
            .any(|q| q.topic == topic && q.group == "g" && q.depth == 3),
        "{listed:?}"
    );
    let peeked = h.dead_letters.peek(&topic, "g", 10).await.expect("peek");
    assert_eq!(peeked.len(), 3);
    let peeked_again = h.dead_letters.peek(&topic, "g", 10).await.expect("peek");
    assert_eq!(peeked_again.len(), 3, "peek must not remove");

    healthy.store(true, AtomicOrdering::SeqCst);
    let moved = h
        .dead_letters
        .redrive(&topic, "g", Some(2))
        .await
        .expect("redrive");
    assert_eq!(moved, 2);
    rec.wait_for(2, h.capabilities.patience).await;
    let left = h.dead_letters.peek(&topic, "g", 10).await.expect("peek");
    assert_eq!(left.len(), 1);
    let purged = h.dead_letters.purge(&topic, "g").await.expect("purge");
    assert_eq!(purged, 1);
    assert!(
        h.dead_letters
            .peek(&topic, "g", 10)
            .await
            .expect("peek")
            .is_empty()
    );
    tokio::time::sleep(h.capabilities.quiet_period).await;
    stop(c).await;
    let redriven: HashSet<String> = rec.messages().iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(redriven.len(), 2);
    let originals: HashSet<String> = sent.iter().map(|m| m.id().to_owned()).collect();
    assert!(redriven.is_subset(&originals));
}

/// Restarting the broker mid-stream loses no confirmed message.
pub async fn broker_restart_without_loss(h: Harness) {
    let restart = h
        .restart
        .clone()
        .expect("the harness must say how to restart the broker");
    let topic = unique("restart");
    let rec = Recorder::default();
    let c = consumer(&h, &topic, "g")
        .concurrency(8)
        .dedup(Arc::new(MemoryIdempotencyStore::default()))
        .start(rec.handler())
        .await
        .expect("start");
    let total = 200;
    let publisher = h.publisher.clone();
    let topic_p = topic.clone();
    let patience = h.capabilities.patience;
    let publishing = tokio::spawn(async move {
        for i in 0..total {
            let m = numbered(i);
            let deadline = Instant::now() + patience * 2;
            // A failed publish is retried with the same id: the broker was down, not the message bad.
            while let Err(e) = publisher.publish(&topic_p, m.clone()).await {
                assert!(Instant::now() < deadline, "publish kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    rec.wait_for(total / 4, patience).await;
    restart().await;
    publishing.await.expect("publisher");
    rec.wait_until(patience * 2, "every message after the restart", |seen| {
        seen.iter().map(number_of).collect::<HashSet<_>>().len() >= total
    })
    .await;
    stop(c).await;
    let distinct: HashSet<usize> = rec.messages().iter().map(number_of).collect();
    assert_eq!(distinct, (0..total).collect::<HashSet<_>>());
}
