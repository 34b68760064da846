//! Fidelity tests: the unmodified azservicebus client against the emulator, each asserting what
//! Microsoft documents for Service Bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use azservicebus::{ServiceBusMessage, ServiceBusReceiveMode};
use busway_sb_emulator::{Emulator, QueueConfig};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_then_peek_lock_receive_and_complete() {
    within(async {
        let emulator = start(Emulator::builder().queue(QueueConfig::new("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut sender = sender(&mut client, "q1").await;
        sender
            .send_message(ServiceBusMessage::new("hello"))
            .await
            .unwrap();
        sender
            .send_message(ServiceBusMessage::new("world"))
            .await
            .unwrap();

        let mut receiver = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let first = receive_one(&mut receiver).await;
        assert_eq!(body(&first), "hello");
        assert_eq!(first.sequence_number(), 1);
        assert_eq!(first.delivery_count(), Some(1));
        assert!(first.locked_until().is_some());
        receiver.complete_message(&first).await.unwrap();
        let second = receive_one(&mut receiver).await;
        assert_eq!(body(&second), "world");
        assert_eq!(second.sequence_number(), 2);
        receiver.complete_message(&second).await.unwrap();

        assert_empty(&mut receiver, Duration::from_millis(300)).await;
        eventually(|| async { (emulator.message_counts("q1") == Some((0, 0))).then_some(()) })
            .await;
        receiver.dispose().await.unwrap();
        sender.dispose().await.unwrap();
        client.dispose().await.unwrap();
        emulator.shutdown().await;
    })
    .await;
}

fn queue(name: &str) -> QueueConfig {
    QueueConfig::new(name)
}

fn text(message: &azservicebus::ServiceBusPeekedMessage) -> String {
    String::from_utf8(message.body().unwrap().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sas_key_is_refused_with_401() {
    within(async {
        let emulator = start(
            Emulator::builder()
                .queue(queue("q1"))
                .sas_key("root", "right-key"),
        )
        .await;
        // The connection itself opens; the first put-token on $cbs is refused.
        let refused = match connect_with_key(&emulator, "root", "wrong-key").await {
            Ok(mut client) => client
                .create_sender("q1", azservicebus::ServiceBusSenderOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}")),
            Err(e) => Err(e),
        };
        let error = refused.expect_err("a wrong key must be refused");
        assert!(error.contains("401"), "expected status 401 in {error}");
        // The right key works.
        let mut client = connect_with_key(&emulator, "root", "right-key")
            .await
            .unwrap();
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("ok")).await.unwrap();
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_and_delete_removes_the_message() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("once"))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::ReceiveAndDelete).await;
        let m = receive_one(&mut r).await;
        assert_eq!(body(&m), "once");
        assert_eq!(m.delivery_count(), Some(1));
        assert!(
            m.locked_until().is_none(),
            "receive-and-delete messages carry no lock expiry"
        );
        assert_empty(&mut r, Duration::from_millis(300)).await;
        assert_eq!(emulator.message_counts("q1"), Some((0, 0)));
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_redelivers_with_incremented_delivery_count() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1").max_delivery_count(5))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("retry me"))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let first = receive_one(&mut r).await;
        assert_eq!(first.delivery_count(), Some(1));
        r.abandon_message(&first, None).await.unwrap();
        let second = receive_one(&mut r).await;
        assert_eq!(body(&second), "retry me");
        assert_eq!(second.sequence_number(), first.sequence_number());
        assert_eq!(second.delivery_count(), Some(2));
        assert_ne!(
            second.lock_token(),
            first.lock_token(),
            "each delivery has its own lock token"
        );
        r.complete_message(&second).await.unwrap();
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lock_makes_message_available_again_and_settling_it_fails() {
    within(async {
        let emulator =
            start(Emulator::builder().queue(queue("q1").lock_duration(Duration::from_millis(700))))
                .await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("slow"))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let mut first = receive_one(&mut r).await;
        let locked_until = first.locked_until().unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!(locked_until > now && locked_until <= now + time::Duration::seconds(2));
        // Not settled: after the lock duration the message comes back with delivery count + 1.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let error = r
            .renew_message_lock(&mut first)
            .await
            .expect_err("lock is lost");
        let error = format!("{error:?}");
        assert!(
            error.contains("410"),
            "renewing an expired lock fails with 410: {error}"
        );
        // Completing with the stale lock does not remove the message.
        r.complete_message(&first).await.ok();
        let again = receive_one(&mut r).await;
        assert_eq!(body(&again), "slow");
        assert_eq!(again.delivery_count(), Some(2));
        r.complete_message(&again).await.unwrap();
        eventually(|| async { (emulator.message_counts("q1") == Some((0, 0))).then_some(()) })
            .await;
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_lock_extends_locked_until() {
    within(async {
        let emulator =
            start(Emulator::builder().queue(queue("q1").lock_duration(Duration::from_millis(800))))
                .await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("long job"))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let mut m = receive_one(&mut r).await;
        let before = m.locked_until().unwrap();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            r.renew_message_lock(&mut m).await.unwrap();
        }
        let after = m.locked_until().unwrap();
        assert!(
            after > before,
            "renewal moves locked-until forward ({before} -> {after})"
        );
        // 1.2 s after receipt the original lock would have expired; the renewed one still settles.
        r.complete_message(&m).await.unwrap();
        assert_empty(&mut r, Duration::from_millis(1200)).await;
        assert_eq!(emulator.message_counts("q1"), Some((0, 0)));
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_delivery_count_moves_message_to_dead_letter_queue() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1").max_delivery_count(3))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("poison"))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        for attempt in 1..=3 {
            let m = receive_one(&mut r).await;
            assert_eq!(m.delivery_count(), Some(attempt));
            r.abandon_message(&m, None).await.unwrap();
        }
        assert_empty(&mut r, Duration::from_millis(300)).await;
        let mut dlq = receiver_with(
            &mut client,
            "q1",
            ServiceBusReceiveMode::PeekLock,
            azservicebus::SubQueue::DeadLetter,
        )
        .await;
        let dead = receive_one(&mut dlq).await;
        assert_eq!(body(&dead), "poison");
        assert_eq!(dead.dead_letter_reason(), Some("MaxDeliveryCountExceeded"));
        assert!(dead.dead_letter_error_description().unwrap().contains('3'));
        dlq.complete_message(&dead).await.unwrap();
        eventually(|| async { (emulator.message_counts("q1") == Some((0, 0))).then_some(()) })
            .await;
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_carries_reason_and_description() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("bad")).await.unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let m = receive_one(&mut r).await;
        r.dead_letter_message(
            &m,
            azservicebus::receiver::DeadLetterOptions {
                dead_letter_reason: Some("Invalid".into()),
                dead_letter_error_description: Some("field x missing".into()),
                properties_to_modify: None,
            },
        )
        .await
        .unwrap();
        let mut dlq = receiver_with(
            &mut client,
            "q1",
            ServiceBusReceiveMode::ReceiveAndDelete,
            azservicebus::SubQueue::DeadLetter,
        )
        .await;
        let dead = receive_one(&mut dlq).await;
        assert_eq!(body(&dead), "bad");
        assert_eq!(dead.sequence_number(), m.sequence_number());
        assert_eq!(dead.dead_letter_reason(), Some("Invalid"));
        assert_eq!(
            dead.dead_letter_error_description(),
            Some("field x missing")
        );
        assert_empty(&mut r, Duration::from_millis(200)).await;
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_message_is_received_by_sequence_number_and_settled() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("later"))
            .await
            .unwrap();
        s.send_message(ServiceBusMessage::new("now")).await.unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let m = receive_one(&mut r).await;
        let seq = m.sequence_number();
        r.defer_message(&m, None).await.unwrap();
        // A deferred message is not delivered by receive any more.
        let next = receive_one(&mut r).await;
        assert_eq!(body(&next), "now");
        r.complete_message(&next).await.unwrap();
        assert_empty(&mut r, Duration::from_millis(200)).await;

        let deferred = r
            .receive_deferred_message(seq)
            .await
            .unwrap()
            .expect("deferred message");
        assert_eq!(body(&deferred), "later");
        assert_eq!(
            deferred.state(),
            azservicebus::ServiceBusMessageState::Deferred
        );
        r.complete_message(&deferred).await.unwrap();
        // Completed: it can no longer be received by sequence number (404 MessageNotFound).
        let error = format!(
            "{:?}",
            r.receive_deferred_message(seq).await.expect_err("gone")
        );
        assert!(error.contains("404"), "expected 404 in {error}");
        eventually(|| async { (emulator.message_counts("q1") == Some((0, 0))).then_some(()) })
            .await;
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_by_unknown_sequence_number_is_404() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("active"))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        // Sequence 1 exists but is not deferred; 42 does not exist.
        for seq in [1, 42] {
            let error = format!(
                "{:?}",
                r.receive_deferred_message(seq)
                    .await
                    .expect_err("not deferred")
            );
            assert!(error.contains("404"), "expected 404 for {seq}: {error}");
        }
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_returns_messages_in_order_without_locking() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        for i in 0..3 {
            s.send_message(ServiceBusMessage::new(format!("m{i}")))
                .await
                .unwrap();
        }
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let peeked = r.peek_messages(10, Some(1)).await.unwrap();
        assert_eq!(
            peeked.iter().map(text).collect::<Vec<_>>(),
            ["m0", "m1", "m2"]
        );
        assert_eq!(
            peeked
                .iter()
                .map(|m| m.sequence_number())
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let from_two = r.peek_messages(1, Some(2)).await.unwrap();
        assert_eq!(from_two.iter().map(text).collect::<Vec<_>>(), ["m1"]);
        // Peeking neither locks nor counts a delivery.
        let m = receive_one(&mut r).await;
        assert_eq!(body(&m), "m0");
        assert_eq!(m.delivery_count(), Some(1));
        let none = r.peek_messages(5, Some(100)).await.unwrap();
        assert!(none.is_empty());
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_message_is_delivered_when_due() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        let due = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
        let seq = s
            .schedule_message(ServiceBusMessage::new("tick"), due)
            .await
            .unwrap();
        assert_eq!(seq, 1);
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let peeked = r.peek_messages(1, Some(1)).await.unwrap();
        assert_eq!(
            peeked[0].state(),
            azservicebus::ServiceBusMessageState::Scheduled
        );
        assert_empty(&mut r, Duration::from_millis(800)).await;
        let m = receive_one(&mut r).await;
        let arrived = time::OffsetDateTime::now_utc();
        assert_eq!(body(&m), "tick");
        assert_eq!(m.sequence_number(), seq);
        assert!(arrived >= due, "delivered at {arrived}, due {due}");
        assert!(
            arrived - due < time::Duration::seconds(1),
            "delivered late: {arrived} vs {due}"
        );
        assert!((m.enqueued_time() - due).abs() < time::Duration::milliseconds(50));
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_scheduled_message_is_never_delivered() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        let due = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(500);
        let seq = s
            .schedule_message(ServiceBusMessage::new("cancel me"), due)
            .await
            .unwrap();
        s.cancel_scheduled_message(seq).await.unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        assert_empty(&mut r, Duration::from_millis(1000)).await;
        let error = format!(
            "{:?}",
            s.cancel_scheduled_message(seq)
                .await
                .expect_err("already cancelled")
        );
        assert!(error.contains("404"), "expected 404: {error}");
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_enqueue_time_on_plain_send_is_honoured() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        let mut message = ServiceBusMessage::new("deferred start");
        let due = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1000);
        message.set_scheduled_enqueue_time(due);
        s.send_message(message).await.unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        assert_empty(&mut r, Duration::from_millis(500)).await;
        let m = receive_one(&mut r).await;
        assert!(time::OffsetDateTime::now_utc() >= due);
        assert_eq!(body(&m), "deferred start");
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_is_dropped() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        let mut short = ServiceBusMessage::new("short-lived");
        short.set_time_to_live(Duration::from_millis(300)).unwrap();
        s.send_message(short).await.unwrap();
        s.send_message(ServiceBusMessage::new("durable"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let m = receive_one(&mut r).await;
        assert_eq!(body(&m), "durable");
        assert_empty(&mut r, Duration::from_millis(200)).await;
        // Without DeadLetteringOnMessageExpiration the expired message is simply gone.
        assert_eq!(emulator.message_counts("q1").map(|c| c.1), Some(0));
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_is_dead_lettered_when_configured() {
    within(async {
        let emulator = start(
            Emulator::builder().queue(
                queue("q1")
                    .default_message_ttl(Duration::from_millis(300))
                    .dead_lettering_on_message_expiration(true),
            ),
        )
        .await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("stale"))
            .await
            .unwrap();
        let mut dlq = receiver_with(
            &mut client,
            "q1",
            ServiceBusReceiveMode::PeekLock,
            azservicebus::SubQueue::DeadLetter,
        )
        .await;
        let dead = receive_one(&mut dlq).await;
        assert_eq!(body(&dead), "stale");
        assert_eq!(dead.dead_letter_reason(), Some("TTLExpiredException"));
        assert!(
            time::OffsetDateTime::now_utc() - dead.enqueued_time()
                >= time::Duration::milliseconds(300)
        );
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_detection_drops_repeated_message_id_within_window() {
    within(async {
        let emulator = start(
            Emulator::builder().queue(queue("q1").duplicate_detection(Duration::from_millis(800))),
        )
        .await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        let with_id = |id: &str, text: &str| {
            let mut m = ServiceBusMessage::new(text.to_string());
            m.set_message_id(id).unwrap();
            m
        };
        s.send_message(with_id("order-1", "first")).await.unwrap();
        // Accepted by the service, but silently dropped as a duplicate.
        s.send_message(with_id("order-1", "second")).await.unwrap();
        s.send_message(with_id("order-2", "other")).await.unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::ReceiveAndDelete).await;
        assert_eq!(body(&receive_one(&mut r).await), "first");
        let other = receive_one(&mut r).await;
        assert_eq!(body(&other), "other");
        assert_eq!(other.message_id().as_deref(), Some("order-2"));
        assert_empty(&mut r, Duration::from_millis(200)).await;
        // After the window the id is forgotten.
        tokio::time::sleep(Duration::from_millis(900)).await;
        s.send_message(with_id("order-1", "third")).await.unwrap();
        assert_eq!(body(&receive_one(&mut r).await), "third");
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_send_preserves_order_and_properties() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        let messages = (0..5i32).map(|i| {
            let mut m = ServiceBusMessage::new(format!("b{i}"));
            m.set_message_id(format!("id-{i}")).unwrap();
            m.set_subject(Some(format!("subject-{i}")));
            m.set_correlation_id(Some("corr".to_string()));
            m.set_content_type(Some("text/plain".to_string()));
            m.application_properties_mut()
                .get_or_insert_with(Default::default)
                .insert(
                    "index".to_string(),
                    fe2o3_amqp_types::primitives::SimpleValue::Long(i64::from(i)),
                );
            m
        });
        s.send_messages(messages).await.unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::PeekLock).await;
        let got = r
            .receive_messages_with_max_wait_time(5, PATIENCE)
            .await
            .unwrap();
        let mut all = got;
        while all.len() < 5 {
            all.push(receive_one(&mut r).await);
        }
        for (i, m) in all.iter().enumerate() {
            assert_eq!(body(m), format!("b{i}"));
            assert_eq!(m.sequence_number(), i as i64 + 1);
            assert_eq!(m.message_id().as_deref(), Some(format!("id-{i}").as_str()));
            assert_eq!(m.subject(), Some(format!("subject-{i}").as_str()));
            assert_eq!(m.correlation_id().as_deref(), Some("corr"));
            assert_eq!(m.content_type(), Some("text/plain"));
            let index = m.application_properties().unwrap().get("index").cloned();
            assert_eq!(
                index,
                Some(fe2o3_amqp_types::primitives::SimpleValue::Long(i as i64))
            );
            r.complete_message(m).await.unwrap();
        }
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_receivers_each_get_distinct_messages() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client_a = connect(&emulator).await;
        let mut client_b = connect(&emulator).await;
        let mut s = sender(&mut client_a, "q1").await;
        let mut a = receiver(&mut client_a, "q1", ServiceBusReceiveMode::PeekLock).await;
        let mut b = receiver(&mut client_b, "q1", ServiceBusReceiveMode::PeekLock).await;
        for i in 0..6 {
            s.send_message(ServiceBusMessage::new(format!("w{i}")))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        // Only one receiver asks at a time; an idle receiver must not hold messages back.
        for i in 0..6 {
            let r = if i % 2 == 0 { &mut a } else { &mut b };
            let m = receive_one(r).await;
            seen.push(body(&m));
            r.complete_message(&m).await.unwrap();
        }
        seen.sort();
        assert_eq!(seen, ["w0", "w1", "w2", "w3", "w4", "w5"]);
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exceeded_when_entity_is_full() {
    within(async {
        let limits = busway_sb_emulator::Limits {
            max_entity_messages: 2,
            ..busway_sb_emulator::Limits::default()
        };
        let emulator = start(Emulator::builder().queue(queue("q1")).limits(limits)).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new("1")).await.unwrap();
        s.send_message(ServiceBusMessage::new("2")).await.unwrap();
        let error = format!(
            "{:?}",
            s.send_message(ServiceBusMessage::new("3"))
                .await
                .expect_err("full")
        );
        assert!(
            error.contains("ResourceLimitExceeded"),
            "QuotaExceeded expected: {error}"
        );
        // Consuming frees room again.
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::ReceiveAndDelete).await;
        assert_eq!(body(&receive_one(&mut r).await), "1");
        s.send_message(ServiceBusMessage::new("4")).await.unwrap();
        assert_eq!(emulator.message_counts("q1"), Some((2, 0)));
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "q1").await;
        // The link states the limit (max-message-size 256 KiB), as Service Bus does, and the
        // limit is enforced: a larger message is never stored. (azservicebus 0.25 / fe2o3 cut a
        // message above the link's max-message-size into several transfers; the send fails.)
        assert_eq!(
            s.create_message_batch(Default::default())
                .unwrap()
                .max_size_in_bytes(),
            256 * 1024
        );
        let big = vec![b'x'; 300 * 1024];
        assert!(
            s.send_message(ServiceBusMessage::new(big)).await.is_err(),
            "a message above 256 KB must be refused"
        );
        assert_eq!(emulator.message_counts("q1"), Some((0, 0)));
        // A message below the limit goes through.
        let mut s = sender(&mut client, "q1").await;
        s.send_message(ServiceBusMessage::new(vec![b'y'; 200 * 1024]))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "q1", ServiceBusReceiveMode::ReceiveAndDelete).await;
        let m = receive_one(&mut r).await;
        assert_eq!(m.body().unwrap().len(), 200 * 1024);
        assert_eq!(emulator.message_counts("q1"), Some((0, 0)));
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_entity_is_refused() {
    within(async {
        let emulator = start(Emulator::builder().queue(queue("q1"))).await;
        let mut client = connect(&emulator).await;
        let sent = match client
            .create_sender("missing", azservicebus::ServiceBusSenderOptions::default())
            .await
        {
            Ok(mut s) => s
                .send_message(ServiceBusMessage::new("x"))
                .await
                .map_err(|e| format!("{e:?}")),
            Err(e) => Err(format!("{e:?}")),
        };
        assert!(sent.is_err(), "sending to a missing entity must fail");
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_from_config_file() {
    within(async {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/Config.json");
        let emulator = start(Emulator::from_config_file(path).unwrap()).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "queue.1").await;
        s.send_message(ServiceBusMessage::new("from config"))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "queue.1", ServiceBusReceiveMode::PeekLock).await;
        let m = receive_one(&mut r).await;
        assert_eq!(body(&m), "from config");
        // LockDuration PT1M from Config.json.
        let lock = m.locked_until().unwrap() - time::OffsetDateTime::now_utc();
        assert!(lock > time::Duration::seconds(50) && lock <= time::Duration::seconds(61));
        r.complete_message(&m).await.unwrap();
        emulator.shutdown().await;
    })
    .await;
}
