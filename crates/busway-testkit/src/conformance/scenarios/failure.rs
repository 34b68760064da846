//! Failures: retries, redelivery, dead letters, panics, settlements that fail, dedup.

use super::common::*;

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
    eventually(h.expect.patience, "the first attempt", || {
        !attempts.lock().unwrap().is_empty()
    })
    .await;
    let healthy = numbered(2);
    publish(&h, &topic, healthy.clone()).await;
    rec.wait_for(2, h.expect.patience).await;
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
        waited + h.expect.timing_tolerance >= delay,
        "redelivered after {waited:?}, before the {delay:?} delay"
    );
}

/// A message that always fails is dead-lettered after exactly N deliveries, with complete
/// metadata and unchanged, while healthy messages keep flowing (handled while the poison waits
/// for its redelivery); the alert hook fires once.
pub async fn poison_message_dead_lettered_after_n_attempts(h: Harness) {
    let topic = unique("poison");
    let poison = Message::builder("/poison", "poison.pill")
        .extension("tenant", "acme")
        .data(vec![0xde, 0xad, 0xbe, 0xef])
        .build()
        .expect("valid");
    let poison_id = poison.id().to_owned();
    let poison_calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let healthy = Recorder::default();
    let handler = {
        let (calls, healthy, poison_id) =
            (poison_calls.clone(), healthy.clone(), poison_id.clone());
        handler_fn(move |m: Message| {
            let (calls, healthy, poison_id) = (calls.clone(), healthy.clone(), poison_id.clone());
            async move {
                if m.id() == poison_id {
                    calls.lock().unwrap().push(Instant::now());
                    return Err(HandlerError::transient("downstream rejects this one"));
                }
                healthy.record(m);
                Ok(())
            }
        })
    };
    let redelivery_delay = Duration::from_secs(2);
    let c = consumer(&h, &topic, "g")
        .concurrency(4)
        .redelivery(RedeliveryPolicy::new(
            3,
            Backoff::Fixed {
                delay: redelivery_delay,
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
    eventually(h.expect.patience, "the poison's first attempt", || {
        !poison_calls.lock().unwrap().is_empty()
    })
    .await;
    // Published while the poison waits for its redelivery: they must not wait behind it.
    for i in 0..10 {
        publish(&h, &topic, numbered(i)).await;
    }
    healthy.wait_for(10, h.expect.patience).await;
    finish_when(&h, c, "the poison message to be dead-lettered", |s| {
        s.dead_lettered == 1
    })
    .await;
    let calls = poison_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "exactly three deliveries");
    let last_healthy = healthy
        .timed()
        .iter()
        .map(|(t, _)| *t)
        .max()
        .expect("healthy");
    assert!(
        last_healthy < calls[1],
        "healthy messages waited for the poison's redelivery"
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
    eventually(h.expect.patience, "three dead letters", || {
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
    rec.wait_for(2, h.expect.patience).await;
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
    tokio::time::sleep(h.expect.quiet_period).await;
    stop(c).await;
    let redriven: HashSet<String> = rec.messages().iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(redriven.len(), 2);
    let originals: HashSet<String> = sent.iter().map(|m| m.id().to_owned()).collect();
    assert!(redriven.is_subset(&originals));
}

/// A handler that panics has failed an attempt: retried in process and redelivered per policy,
/// then dead-lettered after exactly N deliveries with reason `handler_panicked` and the panic
/// message, while healthy messages keep flowing.
pub async fn handler_panic_dead_lettered_after_n_attempts(h: Harness) {
    let topic = unique("panic");
    let poison = numbered(0);
    let poison_id = poison.id().to_owned();
    let calls = Arc::new(AtomicUsize::new(0));
    let healthy = Recorder::default();
    let handler = {
        let (calls, healthy, poison_id) = (calls.clone(), healthy.clone(), poison_id.clone());
        handler_fn(move |m: Message| {
            let (calls, healthy, poison_id) = (calls.clone(), healthy.clone(), poison_id.clone());
            async move {
                if m.id() == poison_id {
                    calls.fetch_add(1, AtomicOrdering::SeqCst);
                    panic!("index out of bounds in order {}", m.id());
                }
                healthy.record(m);
                Ok::<_, HandlerError>(())
            }
        })
    };
    let c = consumer(&h, &topic, "g")
        .concurrency(4)
        .retry(RetryPolicy::fixed(Duration::from_millis(10), 2))
        .redelivery(RedeliveryPolicy::new(
            3,
            Backoff::Fixed {
                delay: Duration::from_millis(200),
            },
        ))
        .start(handler)
        .await
        .expect("start");
    publish(&h, &topic, poison.clone()).await;
    for i in 1..=5 {
        publish(&h, &topic, numbered(i)).await;
    }
    healthy.wait_for(5, h.expect.patience).await;
    let report = finish_when(&h, c, "the panicking message to be dead-lettered", |s| {
        s.dead_lettered == 1
    })
    .await;
    assert_eq!(
        calls.load(AtomicOrdering::SeqCst),
        6,
        "two attempts in process for each of three deliveries"
    );
    assert_eq!(report.stats.acked, 5);
    assert_eq!(report.stats.redelivered, 2);
    let dead = h.dead_letters.peek(&topic, "g", 10).await.expect("peek");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message, poison);
    let meta = dead[0].metadata.as_ref().expect("busway metadata");
    assert_eq!(meta.reason, DeadLetterReason::HandlerPanicked);
    assert_eq!(meta.attempts, 3);
    assert!(
        meta.error.contains("index out of bounds in order"),
        "the panic message belongs in the metadata: {}",
        meta.error
    );
}

/// A dead letter the broker refuses neither loses the message nor stops the consumer: healthy
/// messages keep flowing, and once the broker accepts dead letters again the message is
/// dead-lettered, once, unchanged.
pub async fn failed_settlement_neither_loses_nor_freezes(h: Harness) {
    let refuse = h
        .refuse_dead_letters
        .clone()
        .expect("the harness must say how to make the broker refuse dead letters");
    let topic = unique("settlefail");
    refuse(topic.clone(), "g".into(), true).await;
    let poison = numbered(0);
    let poison_id = poison.id().to_owned();
    let healthy = Recorder::default();
    let poison_calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (healthy, calls, poison_id) =
            (healthy.clone(), poison_calls.clone(), poison_id.clone());
        handler_fn(move |m: Message| {
            let (healthy, calls, poison_id) = (healthy.clone(), calls.clone(), poison_id.clone());
            async move {
                if m.id() == poison_id {
                    calls.fetch_add(1, AtomicOrdering::SeqCst);
                    return Err(HandlerError::permanent("order does not exist"));
                }
                healthy.record(m);
                Ok(())
            }
        })
    };
    let c = consumer(&h, &topic, "g")
        .concurrency(4)
        .start(handler)
        .await
        .expect("start");
    publish(&h, &topic, poison.clone()).await;
    eventually(h.expect.patience, "a refused dead letter", || {
        c.stats().settle_failures >= 1
    })
    .await;
    for i in 1..=10 {
        publish(&h, &topic, numbered(i)).await;
    }
    healthy.wait_for(10, h.expect.patience).await;
    assert!(
        h.dead_letters
            .peek(&topic, "g", 10)
            .await
            .expect("peek")
            .is_empty(),
        "the broker refused the dead letter, yet one is there"
    );
    assert_eq!(
        c.stats().dead_lettered,
        0,
        "a refused dead letter was counted"
    );

    refuse(topic.clone(), "g".into(), false).await;
    eventually(h.expect.patience, "the dead letter once accepted", || {
        c.stats().dead_lettered == 1
    })
    .await;
    for i in 11..=15 {
        publish(&h, &topic, numbered(i)).await;
    }
    healthy.wait_for(15, h.expect.patience).await;
    tokio::time::sleep(h.expect.quiet_period).await;
    let report = stop(c).await;
    assert_eq!(report.stats.dead_lettered, 1);
    let dead = h.dead_letters.peek(&topic, "g", 10).await.expect("peek");
    assert_eq!(dead.len(), 1, "dead-lettered once: {dead:?}");
    assert_eq!(dead[0].message, poison, "the dead letter must be unchanged");
    let meta = dead[0].metadata.as_ref().expect("busway metadata");
    assert_eq!(meta.reason, DeadLetterReason::PermanentError);
    let mut got: Vec<usize> = healthy.messages().iter().map(number_of).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=15).collect::<Vec<_>>(),
        "healthy messages lost or repeated"
    );
    assert!(poison_calls.load(AtomicOrdering::SeqCst) >= 2);
}

/// Redriving one group's dead letters sends them to that group only: another group of the
/// topic, which handled them the first time, does not see them again.
pub async fn redrive_reaches_only_the_group_that_failed(h: Harness) {
    let topic = unique("redrive2");
    let fixed = Arc::new(AtomicBool::new(false));
    let (failing, other) = (Recorder::default(), Recorder::default());
    let handler = {
        let (fixed, failing) = (fixed.clone(), failing.clone());
        handler_fn(move |m: Message| {
            let (fixed, failing) = (fixed.clone(), failing.clone());
            async move {
                if !fixed.load(AtomicOrdering::SeqCst) {
                    return Err(HandlerError::permanent("bug in billing"));
                }
                failing.record(m);
                Ok(())
            }
        })
    };
    let billing = consumer(&h, &topic, "billing")
        .start(handler)
        .await
        .expect("start");
    let shipping = consumer(&h, &topic, "shipping")
        .start(other.handler())
        .await
        .expect("start");
    let sent: Vec<Message> = (0..2).map(numbered).collect();
    for m in &sent {
        publish(&h, &topic, m.clone()).await;
    }
    other.wait_for(2, h.expect.patience).await;
    eventually(h.expect.patience, "billing's dead letters", || {
        billing.stats().dead_lettered == 2
    })
    .await;
    fixed.store(true, AtomicOrdering::SeqCst);
    let moved = h
        .dead_letters
        .redrive(&topic, "billing", None)
        .await
        .expect("redrive");
    assert_eq!(moved, 2);
    failing.wait_for(2, h.expect.patience).await;
    tokio::time::sleep(h.expect.quiet_period * 2).await;
    stop(billing).await;
    stop(shipping).await;
    assert_eq!(
        other.len(),
        2,
        "the redrive reached a group that had handled the messages"
    );
    let mut redriven: Vec<usize> = failing.messages().iter().map(number_of).collect();
    redriven.sort_unstable();
    assert_eq!(redriven, vec![0, 1]);
    assert!(
        h.dead_letters
            .peek(&topic, "shipping", 10)
            .await
            .expect("peek")
            .is_empty()
    );
}
