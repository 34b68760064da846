//! Delivery: what arrives, where, in which order, and what is refused.

use super::common::*;

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
        let d = next_delivery(&mut sub, h.expect.patience).await;
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
        let d = next_delivery(&mut sub_a, h.expect.patience).await;
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
        let d = next_delivery(&mut sub_b, h.expect.patience).await;
        seen_b.insert(d.message().id().to_owned());
        d.ack().await.expect("ack");
    }
    let want_b: HashSet<_> = for_b.iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(seen_b, want_b);
    assert_next_is(&h, &b, &mut sub_b, numbered(98)).await;
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
    eventually(h.expect.patience, "every message handled", || total() >= n).await;
    tokio::time::sleep(h.expect.quiet_period).await;
    let ids: Vec<String> = first
        .messages()
        .iter()
        .chain(second.messages().iter())
        .map(|m| m.id().to_owned())
        .collect();
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), n, "a message was handled twice or lost");
    assert_eq!(distinct.len(), n);
    if h.expect.members_share_load {
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
        rec.wait_for(10, h.expect.patience).await;
    }
    tokio::time::sleep(h.expect.quiet_period).await;
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
                // Durations vary within each key (keys take turns, so `n / 3` counts within a
                // key): a later message of a key often finishes faster than an earlier one.
                let ms = [15, 0, 10, 5][(n / 3) % 4];
                tokio::time::sleep(Duration::from_millis(ms)).await;
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
    eventually(h.expect.patience, "all keyed messages", || {
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
        let d = next_delivery(&mut sub, h.expect.patience).await;
        assert_eq!(d.attempt(), 1);
        if d.message().id() == acked.id() {
            d.ack().await.expect("ack");
        } else {
            d.redeliver(Duration::ZERO).await.expect("nack");
        }
    }
    while redelivered.is_none() {
        let d = next_delivery(&mut sub, h.expect.patience).await;
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
    rec.wait_for(publishers * each, h.expect.patience).await;
    tokio::time::sleep(h.expect.quiet_period).await;
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
    let m = sized(h.expect.large_message_bytes);
    publish(&h, &topic, m.clone()).await;
    let d = next_delivery(&mut sub, h.expect.patience).await;
    assert_eq!(d.message(), &m);
    d.ack().await.expect("ack");
}

/// A message over the limit is refused with a clear error before it is sent.
pub async fn oversized_message_refused(h: Harness) {
    let topic = unique("oversized");
    let mut sub = join(&h, &topic, "g").await;
    let m = sized(h.expect.max_message_bytes + 1);
    let err = h
        .publisher
        .publish(&topic, m)
        .await
        .expect_err("an oversized message must be refused");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert_next_is(&h, &topic, &mut sub, numbered(1)).await;
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
    rec.wait_for(100, h.expect.patience).await;
    let bad = vec![
        numbered(1000),
        sized(h.expect.max_message_bytes + 1),
        numbered(1001),
    ];
    let err = h
        .publisher
        .publish_batch(&topic, bad)
        .await
        .expect_err("must refuse");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    publish(&h, &topic, numbered(2000)).await;
    rec.wait_for(101, h.expect.patience).await;
    tokio::time::sleep(h.expect.quiet_period).await;
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
