//! Subscribing: one librdkafka consumer per subscription, in the busway group's consumer group,
//! reading the topic, its scheduled topic and the group's retry tiers.

mod context;
mod driver;
mod offsets;
mod settle;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use busway_core::{Delivery, Error, Result, StartPosition, SubscribeOptions, Subscription};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::{mpsc, watch};

use self::context::{KafkaContext, Plan};
use self::driver::{Driver, DriverSettings, Links, Tagged};
use self::settle::SettleContext;
pub(crate) use self::state::HandedOut;
use self::state::Shared;
use crate::broker::Inner;
use crate::error::{classify, creating};
use crate::topology;

/// Joins `group` on `topic` and starts the driver task.
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    topic: &str,
    group: &str,
    options: SubscribeOptions,
) -> Result<Box<dyn Subscription>> {
    let config = &inner.config;
    topology::validate_pair(topic, group, config.retry_tiers)?;
    let scheduled = topology::scheduled(topic);
    let retry: Vec<String> = (1..=config.retry_tiers)
        .map(|n| topology::retry(topic, group, n))
        .collect();
    let mut to_create: Vec<(String, i32)> = vec![
        (topic.to_owned(), config.partitions),
        (scheduled.clone(), config.partitions),
    ];
    to_create.extend(retry.iter().map(|t| (t.clone(), config.partitions)));
    to_create.push((topology::dlq(topic, group), 1));
    inner.topics.ensure(&to_create).await?;

    let shared = Arc::new(Shared::new());
    let plan = Arc::new(Plan {
        topic: topic.to_owned(),
        group: group.to_owned(),
        scheduled: scheduled.clone(),
        start: options.start,
        ordering: options.ordering,
        tiers: config.retry_tiers,
        joined_at: chrono::Utc::now().timestamp_millis(),
        snapshot: OnceLock::new(),
    });
    let context = KafkaContext {
        shared: shared.clone(),
        plan: plan.clone(),
        request_timeout: config.request_timeout,
    };
    let consumer: StreamConsumer<KafkaContext> = config
        .consumer_config(topic, group)
        .create_with_context(context)
        .map_err(|e| creating(config, "creating the consumer", e))?;
    let consumer = Arc::new(consumer);

    if options.start == StartPosition::Latest {
        let snapshot = snapshot(
            &consumer,
            &[
                (topic.to_owned(), Mark::High),
                (scheduled.clone(), Mark::Low),
            ],
            config.request_timeout,
        )
        .await?;
        let _ = plan.snapshot.set(snapshot);
    }
    let mut subscribed: Vec<&str> = vec![topic, &scheduled];
    subscribed.extend(retry.iter().map(String::as_str));
    consumer
        .subscribe(&subscribed)
        .map_err(|e| classify("subscribing", e))?;

    let (tx, rx) = mpsc::channel(options.prefetch.max(1));
    let (close_tx, close_rx) = watch::channel(false);
    let (returns_tx, returns_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(SettleContext {
        shared: shared.clone(),
        plan,
        producer: inner.producer.clone(),
        returns: returns_tx,
    });
    let mut assigned = shared.assigned.subscribe();
    let driver = Driver::new(
        consumer,
        ctx,
        inner.handed_out.group(group),
        Links {
            deliveries: tx,
            close: close_rx,
            returns: returns_rx,
        },
        DriverSettings::new(config),
    );
    tokio::spawn(driver.run());
    // Members that share a group should share its partitions from their first message on.
    if tokio::time::timeout(config.join_timeout, assigned.wait_for(|a| *a))
        .await
        .is_err()
    {
        tracing::warn!(
            topic,
            group,
            "no partitions assigned yet; consuming once the group assigns them"
        );
    }
    Ok(Box::new(KafkaSubscription {
        rx,
        close: close_tx,
        shared,
    }))
}

/// Which end of a partition a snapshot takes.
#[derive(Clone, Copy)]
enum Mark {
    Low,
    High,
}

/// The low or high watermark of every partition of each topic (topics that do not exist have
/// none).
async fn snapshot(
    consumer: &Arc<StreamConsumer<KafkaContext>>,
    topics: &[(String, Mark)],
    timeout: std::time::Duration,
) -> Result<HashMap<(String, i32), i64>> {
    let consumer = consumer.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut marks = HashMap::new();
        for (topic, mark) in topics {
            let metadata = consumer
                .fetch_metadata(Some(&topic), timeout)
                .map_err(|e| classify(&format!("reading metadata of {topic}"), e))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            for p in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, timeout)
                    .map_err(|e| classify(&format!("reading offsets of {topic}"), e))?;
                let at = match mark {
                    Mark::Low => low,
                    Mark::High => high,
                };
                marks.insert((topic.clone(), p), at);
            }
        }
        Ok(marks)
    })
    .await
    .map_err(|e| Error::Closed(format!("offset snapshot task failed: {e}")))?
}

/// A member of a consumer group; deliveries come from the driver task.
struct KafkaSubscription {
    rx: mpsc::Receiver<Tagged>,
    close: watch::Sender<bool>,
    shared: Arc<Shared>,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let tagged = self.rx.recv().await?;
            // Its partition was revoked after it was fetched: the new owner handles it.
            if self.shared.is_current(&tagged.tp, tagged.generation) {
                return Some(Ok(tagged.delivery));
            }
        }
    }

    async fn close(&mut self) -> Result<()> {
        self.close.send_replace(true);
        self.rx.close();
        // Prefetched, never handed out: dropping them leaves their offsets uncommitted.
        while self.rx.try_recv().is_ok() {}
        Ok(())
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        self.close.send_replace(true);
    }
}
