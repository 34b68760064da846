//! Small helpers the scenarios share: unique names, test messages, recorders, waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use busway_core::Incoming;
use busway_core::{
    Consumer, ConsumerBuilder, ConsumerHandle, Delivery, HandlerError, Message, Subscription,
    handler_fn,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::util::BoxCloneService;

use super::Harness;

/// A topic or group name no other test uses, so scenarios can share one broker.
pub fn unique(what: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("bw-{what}-{}", &id[..12])
}

/// A small message numbered `n`, with JSON data `{"n": n}`.
pub fn numbered(n: usize) -> Message {
    Message::builder("/busway/conformance", "busway.test.numbered")
        .json(&serde_json::json!({ "n": n }))
        .expect("a number serializes")
        .build()
        .expect("a valid message")
}

/// The `n` of a [`numbered`] message.
pub fn number_of(message: &Message) -> usize {
    let v: serde_json::Value = message.decode_json().expect("numbered message");
    v["n"].as_u64().expect("n is a number") as usize
}

/// Everything a handler saw, in order, with a way to wait for it.
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<(Instant, Message)>>>,
    changed: Arc<Notify>,
}

impl Recorder {
    /// Records one message.
    pub fn record(&self, message: Message) {
        self.seen.lock().unwrap().push((Instant::now(), message));
        self.changed.notify_waiters();
    }

    /// Messages seen so far.
    pub fn messages(&self) -> Vec<Message> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Messages with the time each was seen.
    pub fn timed(&self) -> Vec<(Instant, Message)> {
        self.seen.lock().unwrap().clone()
    }

    /// How many messages were seen.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `done` holds for the messages seen, or panics after `patience`.
    pub async fn wait_until(
        &self,
        patience: Duration,
        what: &str,
        done: impl Fn(&[Message]) -> bool,
    ) {
        let deadline = Instant::now() + patience;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.messages()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let seen = self.len();
                panic!("timed out after {patience:?} waiting for {what}; {seen} messages seen");
            }
        }
    }

    /// Waits until at least `n` messages were seen.
    pub async fn wait_for(&self, n: usize, patience: Duration) {
        self.wait_until(patience, &format!("{n} messages"), |m| m.len() >= n)
            .await;
    }

    /// A handler that records every message and succeeds.
    pub fn handler(&self) -> BoxCloneService<Incoming, (), HandlerError> {
        let rec = self.clone();
        BoxCloneService::new(handler_fn(move |m: Message| {
            let rec = rec.clone();
            async move {
                rec.record(m);
                Ok(())
            }
        }))
    }
}

/// Polls `condition` every 20 ms until it holds, or panics after `patience`.
pub async fn eventually(patience: Duration, what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + patience;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next delivery of a raw subscription, or a panic after `patience`.
pub async fn next_delivery(sub: &mut Box<dyn Subscription>, patience: Duration) -> Delivery {
    let deadline = Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Err(_) => panic!("no delivery within {patience:?}"),
            Ok(None) => panic!("subscription ended"),
            Ok(Some(Err(e))) if e.is_transient() => continue,
            Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
            Ok(Some(Ok(d))) => return d,
        }
    }
}

/// A consumer builder for `topic`/`group` with fast, deterministic test policies: no jitter,
/// short waits.
pub fn consumer(h: &Harness, topic: &str, group: &str) -> ConsumerBuilder {
    Consumer::builder(h.subscriber.clone(), topic, group)
        .retry(busway_core::RetryPolicy::none())
        .redelivery(busway_core::RedeliveryPolicy::new(
            3,
            busway_core::Backoff::Fixed {
                delay: Duration::from_millis(200),
            },
        ))
        .drain_timeout(Duration::from_secs(10))
}

/// Shuts a consumer down, failing the test if the runtime failed.
pub async fn stop(handle: ConsumerHandle) -> busway_core::ConsumerReport {
    handle.shutdown().await.expect("consumer shut down cleanly")
}

/// Publishes one message, failing the test on error.
pub async fn publish(h: &Harness, topic: &str, message: Message) {
    h.publisher
        .publish(topic, message)
        .await
        .unwrap_or_else(|e| panic!("publish to {topic} failed: {e}"));
}

/// Waits until the consumer's counters satisfy `done`, lets a quiet period pass (so anything
/// extra would show), then stops it and returns its report.
pub async fn finish_when(
    h: &Harness,
    handle: ConsumerHandle,
    what: &str,
    done: impl Fn(&busway_core::ConsumerStats) -> bool,
) -> busway_core::ConsumerReport {
    eventually(h.expect.patience, what, || done(&handle.stats())).await;
    tokio::time::sleep(h.expect.quiet_period).await;
    stop(handle).await
}
