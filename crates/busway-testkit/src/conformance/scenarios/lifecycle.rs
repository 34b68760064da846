//! Consumers and brokers coming and going: crashes, cut connections, restarts, shutdown.

use super::common::*;

/// A delivery its consumer never settled comes back to another member once the first is gone.
pub async fn unacked_redelivered_after_consumer_dies(h: Harness) {
    let topic = unique("dies");
    let mut first = join(&h, &topic, "g").await;
    let m = numbered(1);
    publish(&h, &topic, m.clone()).await;
    let d = next_delivery(&mut first, h.expect.patience).await;
    assert_eq!(d.message(), &m);
    // The consumer dies: neither the delivery nor the subscription is settled or closed.
    drop(d);
    drop(first);
    let mut second = join(&h, &topic, "g").await;
    let again = next_delivery(&mut second, h.expect.patience).await;
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
    before.wait_for(10, h.expect.patience).await;
    stop(c).await;
    for i in 10..20 {
        publish(&h, &topic, numbered(i)).await;
    }
    let after = Recorder::default();
    let c = consumer(&h, &topic, "g")
        .start(after.handler())
        .await
        .expect("start");
    after.wait_for(10, h.expect.patience).await;
    tokio::time::sleep(h.expect.quiet_period).await;
    stop(c).await;
    let mut got: Vec<usize> = after.messages().iter().map(number_of).collect();
    got.sort_unstable();
    assert_eq!(got, (10..20).collect::<Vec<_>>());
    assert_eq!(before.len(), 10);
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
    eventually(h.expect.patience, "four handlers running", || {
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
    let patience = h.expect.patience;
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

/// A consumer whose connection is cut (not a delivery dropped in process): the delivery it
/// held is either still settled successfully (the adapter kept it valid across the cut), or it
/// is redelivered with its attempt counted; never neither. Never both where the broker confirms
/// settlements; where it does not (`Capabilities::confirms_settlement`), an ack written as the
/// connection went may be ignored, and the message then comes back once, its attempt counted.
pub async fn connection_cut_redelivers_unsettled(h: Harness) {
    fn assert_redelivery_of(again: &busway_core::Delivery, m: &Message) {
        assert_eq!(again.message(), m);
        assert!(
            again.attempt() >= 2,
            "a redelivery after a cut connection must count the attempt, got {}",
            again.attempt()
        );
    }

    let cut = h
        .cut_connections
        .clone()
        .expect("the harness must say how to cut its connections");
    let topic = unique("cut");
    let mut sub = join(&h, &topic, "g").await;
    let m = numbered(1);
    publish(&h, &topic, m.clone()).await;
    let held = next_delivery(&mut sub, h.expect.patience).await;
    assert_eq!(held.message(), &m);
    assert_eq!(held.attempt(), 1);
    cut().await;
    let acked = held.ack().await.is_ok();
    if !acked {
        let again = next_delivery(&mut sub, h.expect.patience).await;
        assert_redelivery_of(&again, &m);
        again.ack().await.expect("ack the redelivery");
    }
    // The publisher's connection was cut too: publishing must recover by itself.
    let deadline = Instant::now() + h.expect.patience;
    let sentinel = numbered(2);
    while let Err(e) = h.publisher.publish(&topic, sentinel.clone()).await {
        assert!(Instant::now() < deadline, "publishing did not recover: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut d = next_delivery(&mut sub, h.expect.patience).await;
    if acked && !h.broker.confirms_settlement && d.message().id() == m.id() {
        // The ack went out as the connection closed and the broker never read it.
        assert_redelivery_of(&d, &m);
        d.ack().await.expect("ack the redelivery");
        d = next_delivery(&mut sub, h.expect.patience).await;
    }
    assert_eq!(
        d.message().id(),
        sentinel.id(),
        "the message came back although the broker confirmed its ack, or came back twice"
    );
    d.ack().await.expect("ack sentinel");
}
