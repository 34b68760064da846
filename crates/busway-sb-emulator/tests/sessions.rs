//! Fidelity tests for Service Bus sessions: FIFO per session, exclusive session locks, next
//! available session, session state and session lock renewal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use azservicebus::{
    ServiceBusMessage, ServiceBusReceiveMode, ServiceBusSessionReceiver,
    ServiceBusSessionReceiverOptions,
};
use busway_sb_emulator::{Emulator, QueueConfig};
use common::*;

fn in_session(text: &str, session: &str) -> ServiceBusMessage {
    let mut m = ServiceBusMessage::new(text.to_string());
    m.set_session_id(Some(session.to_string())).unwrap();
    m
}

async fn accept(
    client: &mut Client,
    queue: &str,
    session: &str,
) -> Result<ServiceBusSessionReceiver, String> {
    client
        .accept_session_for_queue(queue, session, ServiceBusSessionReceiverOptions::default())
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn receive_session(
    r: &mut ServiceBusSessionReceiver,
) -> azservicebus::ServiceBusReceivedMessage {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(m) = r.receive_message_with_max_wait_time(POLL).await.unwrap() {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no session message in time"
        );
    }
}

fn session_queue(name: &str) -> QueueConfig {
    QueueConfig::new(name).requires_session(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_messages_arrive_in_order_per_session() {
    within(async {
        let emulator = start(Emulator::builder().queue(session_queue("sq"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "sq").await;
        for i in 0..4 {
            s.send_message(in_session(&format!("a{i}"), "A"))
                .await
                .unwrap();
            s.send_message(in_session(&format!("b{i}"), "B"))
                .await
                .unwrap();
        }
        let mut a = accept(&mut client, "sq", "A").await.unwrap();
        assert_eq!(a.session_id(), "A");
        let mut got = Vec::new();
        for _ in 0..4 {
            let m = receive_session(&mut a).await;
            assert_eq!(m.session_id(), Some("A"));
            got.push(body(&m));
            a.complete_message(&m).await.unwrap();
        }
        assert_eq!(got, ["a0", "a1", "a2", "a3"]);
        let none = a
            .receive_message_with_max_wait_time(Duration::from_millis(300))
            .await
            .unwrap();
        assert!(none.is_none(), "session A holds only its own messages");
        a.dispose().await.unwrap();
        assert_eq!(
            emulator.message_counts("sq"),
            Some((4, 0)),
            "session B untouched"
        );
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_has_one_receiver_at_a_time() {
    within(async {
        let emulator = start(Emulator::builder().queue(session_queue("sq"))).await;
        let mut first_client = connect(&emulator).await;
        let mut second_client = connect(&emulator).await;
        let mut s = sender(&mut first_client, "sq").await;
        s.send_message(in_session("x", "S")).await.unwrap();
        let first = accept(&mut first_client, "sq", "S").await.unwrap();
        let refused = accept(&mut second_client, "sq", "S").await;
        assert!(
            refused.is_err(),
            "a locked session cannot be accepted twice"
        );
        // Closing the first receiver releases the session at once.
        first.dispose().await.unwrap();
        let mut second = accept(&mut second_client, "sq", "S").await.unwrap();
        let m = receive_session(&mut second).await;
        assert_eq!(body(&m), "x");
        second.complete_message(&m).await.unwrap();
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_available_session_is_one_with_messages() {
    within(async {
        let emulator = start(
            Emulator::builder()
                .queue(session_queue("sq"))
                .next_session_timeout(Duration::from_millis(500)),
        )
        .await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "sq").await;
        s.send_message(in_session("first", "S1")).await.unwrap();
        s.send_message(in_session("second", "S2")).await.unwrap();
        let mut one = client
            .accept_next_session_for_queue("sq", ServiceBusSessionReceiverOptions::default())
            .await
            .unwrap();
        assert_eq!(
            one.session_id(),
            "S1",
            "the session with the oldest message comes first"
        );
        let mut two = client
            .accept_next_session_for_queue("sq", ServiceBusSessionReceiverOptions::default())
            .await
            .unwrap();
        assert_eq!(two.session_id(), "S2");
        assert_eq!(body(&receive_session(&mut one).await), "first");
        assert_eq!(body(&receive_session(&mut two).await), "second");
        // No other session has messages: accepting times out.
        let none = client
            .accept_next_session_for_queue("sq", ServiceBusSessionReceiverOptions::default())
            .await;
        assert!(none.is_err(), "no session available");
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_is_stored_per_session() {
    within(async {
        let emulator = start(Emulator::builder().queue(session_queue("sq"))).await;
        let mut client = connect(&emulator).await;
        let mut r = accept(&mut client, "sq", "S").await.unwrap();
        assert!(r.session_state().await.unwrap().is_empty(), "no state yet");
        r.set_session_state(b"step=2".to_vec()).await.unwrap();
        assert_eq!(r.session_state().await.unwrap(), b"step=2");
        r.dispose().await.unwrap();
        // The state outlives the receiver and belongs to the session.
        let mut again = accept(&mut client, "sq", "S").await.unwrap();
        assert_eq!(again.session_state().await.unwrap(), b"step=2");
        let mut other = accept(&mut client, "sq", "T").await.unwrap();
        assert!(other.session_state().await.unwrap().is_empty());
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_lock_renewal_and_expiry() {
    within(async {
        let emulator = start(
            Emulator::builder()
                .queue(session_queue("sq").lock_duration(Duration::from_millis(800))),
        )
        .await;
        let mut client = connect(&emulator).await;
        let mut r = accept(&mut client, "sq", "S").await.unwrap();
        let first = r.session_locked_until();
        tokio::time::sleep(Duration::from_millis(400)).await;
        r.renew_session_lock().await.unwrap();
        assert!(
            r.session_locked_until() > first,
            "renewal extends the session lock"
        );
        // Without renewal the lock expires and session operations fail with 410.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let error = format!("{:?}", r.session_state().await.expect_err("lock lost"));
        assert!(
            error.contains("410"),
            "expected SessionLockLost (410): {error}"
        );
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_entities_refuse_session_less_traffic() {
    within(async {
        let emulator = start(
            Emulator::builder()
                .queue(session_queue("sq"))
                .queue(QueueConfig::new("plain")),
        )
        .await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "sq").await;
        let error = format!(
            "{:?}",
            s.send_message(ServiceBusMessage::new("no session"))
                .await
                .expect_err("refused")
        );
        assert!(
            error.contains("SessionId"),
            "a message without SessionId is refused: {error}"
        );
        // A plain receiver on a session queue is refused with Azure's message; a session receiver
        // on a plain queue cannot be accepted either.
        let plain = client
            .create_receiver_for_queue(
                "sq",
                azservicebus::ServiceBusReceiverOptions {
                    receive_mode: ServiceBusReceiveMode::PeekLock,
                    ..Default::default()
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}"));
        let error = plain.expect_err("non-session receiver refused");
        assert!(error.contains("requires sessions"), "{error}");
        let mut client = connect(&emulator).await;
        assert!(accept(&mut client, "plain", "S").await.is_err());
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_session_message_is_redelivered_first() {
    within(async {
        let emulator = start(Emulator::builder().queue(session_queue("sq"))).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "sq").await;
        s.send_message(in_session("one", "S")).await.unwrap();
        s.send_message(in_session("two", "S")).await.unwrap();
        let mut r = accept(&mut client, "sq", "S").await.unwrap();
        let m = receive_session(&mut r).await;
        assert_eq!(body(&m), "one");
        r.abandon_message(&m, None).await.unwrap();
        let again = receive_session(&mut r).await;
        assert_eq!(
            body(&again),
            "one",
            "FIFO: the abandoned message comes back before later ones"
        );
        assert_eq!(again.delivery_count(), Some(2));
        r.complete_message(&again).await.unwrap();
        let next = receive_session(&mut r).await;
        assert_eq!(body(&next), "two");
        r.complete_message(&next).await.unwrap();
        emulator.shutdown().await;
    })
    .await;
}
