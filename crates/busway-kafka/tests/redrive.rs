//! Redrive pages through a dead-letter topic: bounded batches, the cursor committed after each,
//! so a redrive stopped half-way loses nothing and repeats at most one batch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busway_core::{
    Consumer, ConsumerHandle, DeadLetters, HandlerError, Message, Publisher, StartPosition,
    handler_fn,
};
use busway_kafka::KafkaBroker;
use busway_testkit::conformance::support::{numbered, unique};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(120);
/// The adapter's page: 500 records.
const PAGE: usize = 500;

/// Fills `<topic>.<group>.dlq` with `n` dead letters (written straight to the DLQ topic, one
/// at a time as consumers dead-letter them) and returns their ids.
///
/// One record per produce request: tansu 0.6's in-memory storage answers a "latest offset"
/// request with the first offset of the newest record batch plus one, so the depth of a queue
/// written in batches of several records would read short.
async fn fill_dlq(broker: &KafkaBroker, topic: &str, group: &str, n: usize) -> Vec<String> {
    let dlq = format!("{topic}.{group}.dlq");
    let messages: Vec<Message> = (0..n).map(numbered).collect();
    for m in &messages {
        broker.publish(&dlq, m.clone()).await.unwrap();
    }
    messages.iter().map(|m| m.id().to_owned()).collect()
}

/// A consumer of the group counting what reaches it.
async fn counting_consumer(
    broker: &KafkaBroker,
    topic: &str,
    group: &str,
) -> (ConsumerHandle, Arc<Mutex<HashMap<String, usize>>>) {
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let handle = Consumer::builder(Arc::new(broker.clone()), topic, group)
        .start_position(StartPosition::Earliest)
        .concurrency(16)
        .start({
            let seen = seen.clone();
            handler_fn(move |m: Message| {
                let seen = seen.clone();
                async move {
                    *seen.lock().unwrap().entry(m.id().to_owned()).or_default() += 1;
                    Ok::<_, HandlerError>(())
                }
            })
        })
        .await
        .unwrap();
    (handle, seen)
}

/// The queue's depth, as `list` reports it.
async fn depth(broker: &KafkaBroker, topic: &str, group: &str) -> u64 {
    broker
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|q| q.topic == topic && q.group == group)
        .map_or(0, |q| q.depth)
}

/// Records the redrive cursor has moved past, read straight from the cursor group's commits
/// (quicker than `list`, which looks at every DLQ of the cluster).
fn cursor_moved(broker: &KafkaBroker, topic: &str, group: &str) -> usize {
    let dlq = format!("{topic}.{group}.dlq");
    common::commits(
        &broker.config().bootstrap_servers,
        &format!("busway-dlq-cursor.{dlq}"),
        &dlq,
    )
    .iter()
    .filter_map(|(_, committed, _)| *committed)
    .map(|c| c as usize)
    .sum()
}

async fn wait_for_all(seen: &Mutex<HashMap<String, usize>>, ids: &[String]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            ids.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} redriven messages never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A queue of several pages is redriven whole, every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_pages_through_a_queue_of_several_pages() {
    let broker = common::shared_broker().await;
    let (topic, group) = (unique("redrive-pages"), "g");
    let ids = fill_dlq(&broker, &topic, group, 2 * PAGE + 234).await;
    let (consumer, seen) = counting_consumer(&broker, &topic, group).await;
    let moved = broker.redrive(&topic, group, None).await.unwrap();
    assert_eq!(moved, ids.len());
    assert_eq!(depth(&broker, &topic, group).await, 0);
    wait_for_all(&seen, &ids).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    consumer.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), ids.len());
    assert!(seen.values().all(|n| *n == 1), "a message came twice");
}

/// A redrive stopped half-way has moved the cursor past every page it finished: run again, it
/// repeats at most one page and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_stopped_half_way_repeats_at_most_one_page() {
    let broker = common::shared_broker().await;
    let (topic, group) = (unique("redrive-stop"), "g");
    let total = 6 * PAGE;
    let ids = fill_dlq(&broker, &topic, group, total).await;
    assert_eq!(depth(&broker, &topic, group).await, total as u64);

    let redrive = tokio::spawn({
        let (broker, topic) = (broker.clone(), topic.clone());
        async move { broker.redrive(&topic, group, None).await }
    });
    // Stop it once the cursor moved, before the queue is empty.
    let deadline = Instant::now() + PATIENCE;
    let seen_moved = loop {
        let moved = {
            let broker = broker.clone();
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || cursor_moved(&broker, &topic, group))
                .await
                .unwrap()
        };
        if moved > 0 {
            break moved;
        }
        assert!(Instant::now() < deadline, "the cursor never moved");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    redrive.abort();
    assert!(
        seen_moved < total,
        "the cursor moved only once everything was redriven: the redrive is not paged"
    );
    let _ = redrive.await;
    // Whatever was already handed to librdkafka is delivered; then count.
    broker.flush();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let moved_by_cursor = total - depth(&broker, &topic, group).await as usize;
    assert!(
        moved_by_cursor < total,
        "the redrive finished before it could be stopped (moved {seen_moved} when seen)"
    );
    let retry = format!("{topic}.{group}.retry.1");
    let bootstrap = broker.config().bootstrap_servers.clone();
    let redriven = common::count_records(&bootstrap, &retry);
    assert!(
        redriven >= moved_by_cursor,
        "the cursor moved past {moved_by_cursor} records but only {redriven} were redriven"
    );
    assert!(
        redriven - moved_by_cursor <= PAGE,
        "{} records were redriven without the cursor moving past them",
        redriven - moved_by_cursor
    );

    // Run again: the rest arrives, and the group sees every message, repeats within one page.
    let (consumer, seen) = counting_consumer(&broker, &topic, group).await;
    let rest = broker.redrive(&topic, group, None).await.unwrap();
    assert_eq!(rest, total - moved_by_cursor);
    wait_for_all(&seen, &ids).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    consumer.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    let repeated: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "redrive stopped after the cursor moved {seen_moved} of {total}: cursor moved {moved_by_cursor}, redriven {redriven}, repeated {repeated}"
    );
    assert_eq!(seen.len(), total);
    assert!(repeated <= PAGE, "{repeated} messages came twice");
}
