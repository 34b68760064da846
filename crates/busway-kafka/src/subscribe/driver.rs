//! The task that owns a subscription's consumer: it polls librdkafka (which also runs the
//! rebalance callbacks), turns records into deliveries, holds retry and scheduled records until
//! due, pauses partitions when the runtime stops pulling, and commits.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use busway_core::{Delivery, DeliveryInfo, Ordering};
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::context::KafkaContext;
use super::settle::{KafkaSettle, Returned, SettleContext};
use super::state::{GroupHandedOut, Tp};
use crate::codec::InRecord;
use crate::config::KafkaConfig;

/// Records taken from librdkafka's queue in one go when they are already there.
const BURST: usize = 64;

/// How long a record whose handle was dropped unsettled waits before it is delivered again:
/// a settlement that keeps failing (a refused dead letter, say) must not loop hot.
pub(crate) const RETURN_PAUSE: Duration = Duration::from_secs(1);

/// The timings a driver runs by, from the configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DriverSettings {
    pub(crate) commit_interval: Duration,
    pub(crate) pause_after: Duration,
    pub(crate) close_timeout: Duration,
}

impl DriverSettings {
    pub(crate) fn new(config: &KafkaConfig) -> Self {
        Self {
            commit_interval: config.commit_interval,
            pause_after: config.pause_after,
            close_timeout: config.close_timeout,
        }
    }
}

/// The channels between a driver and its subscription.
pub(crate) struct Links {
    /// Deliveries to the subscription.
    pub(crate) deliveries: mpsc::Sender<Tagged>,
    /// Flips to true when the subscription closes.
    pub(crate) close: watch::Receiver<bool>,
    /// Records of handles dropped unsettled.
    pub(crate) returns: mpsc::UnboundedReceiver<Returned>,
}

/// A delivery on its way to the subscription, tagged so a stale one (its partition was
/// revoked meanwhile) can be dropped instead of handled.
pub(crate) struct Tagged {
    pub(crate) tp: Tp,
    pub(crate) generation: u64,
    pub(crate) delivery: Delivery,
}

/// Records of a paused retry or scheduled partition, waiting for their due time.
struct Held {
    generation: u64,
    records: VecDeque<(i64, InRecord)>,
}

pub(crate) struct Driver {
    consumer: Arc<StreamConsumer<KafkaContext>>,
    ctx: Arc<SettleContext>,
    handed_out: Arc<GroupHandedOut>,
    tx: mpsc::Sender<Tagged>,
    close: watch::Receiver<bool>,
    returns: mpsc::UnboundedReceiver<Returned>,
    settings: DriverSettings,
    held: HashMap<Tp, Held>,
    /// Records given back by dropped handles, each with the time it is delivered again.
    returned: VecDeque<(Instant, Returned)>,
    out: VecDeque<Tagged>,
    topic_names: HashMap<String, Arc<str>>,
}

/// What woke the loop up.
enum Wake {
    Closed,
    Room(Option<mpsc::OwnedPermit<Tagged>>),
    Record(Option<Result<InRecord, KafkaError>>),
    Returned(Option<Returned>),
    PauseAll,
    Due,
    Commit,
}

impl Driver {
    pub(crate) fn new(
        consumer: Arc<StreamConsumer<KafkaContext>>,
        ctx: Arc<SettleContext>,
        handed_out: Arc<GroupHandedOut>,
        links: Links,
        settings: DriverSettings,
    ) -> Self {
        Self {
            consumer,
            ctx,
            handed_out,
            tx: links.deliveries,
            close: links.close,
            returns: links.returns,
            settings,
            held: HashMap::new(),
            returned: VecDeque::new(),
            out: VecDeque::new(),
            topic_names: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        let mut commit_tick = tokio::time::interval(self.settings.commit_interval);
        commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut full_since: Option<Instant> = None;
        let consumer = self.consumer.clone();
        let mut stream = consumer.stream();
        loop {
            self.release_due();
            if !self.flush() {
                break;
            }
            let paused_all = self.ctx.shared.lock().paused_all;
            if self.out.is_empty() {
                full_since = None;
                if paused_all {
                    self.set_paused_all(false);
                }
            } else if full_since.is_none() {
                full_since = Some(Instant::now());
            }
            // While the runtime is not pulling, stop polling for a moment (librdkafka's own
            // queue is bounded); if that lasts, pause every partition and go on polling so that
            // rebalances and the poll interval are still served.
            let can_recv = self.out.is_empty() || paused_all;
            let pause_at = full_since
                .filter(|_| !paused_all)
                .map(|t| t + self.settings.pause_after);
            let next_due = self.next_due();
            let wake = {
                let tx = self.tx.clone();
                let mut close = self.close.clone();
                let want_room = !self.out.is_empty();
                tokio::select! {
                    biased;
                    _ = close.wait_for(|c| *c) => Wake::Closed,
                    () = tx.closed() => Wake::Closed,
                    permit = tx.clone().reserve_owned(), if want_room => Wake::Room(permit.ok()),
                    r = stream.next(), if can_recv => Wake::Record(r.map(|r| r.map(|m| InRecord::from_borrowed(&m)))),
                    r = self.returns.recv() => Wake::Returned(r),
                    () = sleep_until(pause_at), if pause_at.is_some() => Wake::PauseAll,
                    () = sleep_until(next_due), if next_due.is_some() => Wake::Due,
                    _ = commit_tick.tick() => Wake::Commit,
                }
            };
            match wake {
                Wake::Closed => break,
                Wake::Room(None) => break,
                Wake::Room(Some(permit)) => {
                    if let Some(d) = self.out.pop_front() {
                        let _ = permit.send(d);
                    }
                }
                Wake::Record(Some(Ok(record))) => {
                    self.on_record(record);
                    // Takes what librdkafka already has without another trip through the loop.
                    for _ in 0..BURST {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(m))) => self.on_record(InRecord::from_borrowed(&m)),
                            Some(Some(Err(e))) => log_consume_error(&self.ctx.plan.group, &e),
                            _ => break,
                        }
                    }
                }
                Wake::Record(Some(Err(e))) => log_consume_error(&self.ctx.plan.group, &e),
                Wake::Record(None) => break,
                Wake::Returned(Some(r)) => {
                    self.returned.push_back((Instant::now() + RETURN_PAUSE, r))
                }
                // The handles' context holds a sender as long as this driver lives.
                Wake::Returned(None) => {}
                Wake::PauseAll => self.set_paused_all(true),
                Wake::Due => {}
                Wake::Commit => self.commit(CommitMode::Async),
            }
        }
        drop(stream);
        drop(consumer);
        self.shutdown().await;
    }

    /// Sends queued deliveries while the channel has room; false once the subscription is gone.
    fn flush(&mut self) -> bool {
        while let Some(d) = self.out.pop_front() {
            match self.tx.try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(d)) => {
                    self.out.push_front(d);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    fn on_record(&mut self, record: InRecord) {
        let tp = self.tp(&record.topic, record.partition);
        let generation = {
            let mut state = self.ctx.shared.lock();
            let Some(p) = state.partitions.get_mut(&tp) else {
                // Fetched just before its partition was revoked: the new owner reads it.
                return;
            };
            let expected = p.offsets.next_fetch();
            if !p.offsets.received(record.offset) {
                return;
            }
            if expected.is_some_and(|e| e != record.offset) {
                // Legitimate in Kafka logs (compaction, transaction markers); anything else
                // would be a record skipped, so it is worth seeing.
                tracing::debug!(topic = %record.topic, partition = record.partition, offset = record.offset, ?expected, "offset gap");
            }
            if p.skip_due_before
                .is_some_and(|joined| record.is_before_group(joined))
            {
                // Scheduled, and due, before the group joined: not the group's.
                p.offsets.done(record.offset);
                return;
            }
            p.generation
        };
        if let Some(held) = self.held.get_mut(&tp)
            && held.generation == generation
        {
            // Behind a record that is not due yet: keep the partition's order.
            let due = record.due_millis().unwrap_or(0);
            held.records.push_back((due, record));
            return;
        }
        if self.ctx.plan.is_delayed(&record.topic)
            && let Some(due) = record.due_millis()
            && due > now_millis()
        {
            // Not due: park this partition (the others go on) until it is.
            self.pause(&tp, true);
            self.ctx.shared.lock().held.insert(tp.clone());
            self.held.insert(
                tp,
                Held {
                    generation,
                    records: VecDeque::from([(due, record)]),
                },
            );
            return;
        }
        self.enqueue(tp, generation, record);
    }

    /// Moves held and returned records that became due to the outgoing queue; resumes emptied
    /// partitions.
    fn release_due(&mut self) {
        let now = Instant::now();
        while self.returned.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, r)) = self.returned.pop_front() {
                self.deliver_again(r);
            }
        }
        if self.held.is_empty() {
            return;
        }
        let now = now_millis();
        let mut resume = Vec::new();
        let mut ready = Vec::new();
        for (tp, held) in &mut self.held {
            if !self.ctx.shared.is_current(tp, held.generation) {
                // Revoked meanwhile: the records are the new owner's now.
                held.records.clear();
                resume.push((tp.clone(), false));
                continue;
            }
            while held.records.front().is_some_and(|(due, _)| *due <= now) {
                if let Some((_, record)) = held.records.pop_front() {
                    ready.push((tp.clone(), held.generation, record));
                }
            }
            if held.records.is_empty() {
                resume.push((tp.clone(), true));
            }
        }
        for (tp, generation, record) in ready {
            self.enqueue(tp, generation, record);
        }
        for (tp, still_ours) in resume {
            self.held.remove(&tp);
            self.ctx.shared.lock().held.remove(&tp);
            if still_ours && !self.ctx.shared.lock().paused_all {
                self.pause(&tp, false);
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let held = self
            .held
            .values()
            .filter_map(|h| h.records.front().map(|(d, _)| *d))
            .min()
            .map(|due| {
                let wait = u64::try_from(due - now_millis()).unwrap_or(0);
                Instant::now() + Duration::from_millis(wait)
            });
        let returned = self.returned.front().map(|(at, _)| *at);
        held.into_iter().chain(returned).min()
    }

    /// Delivers a record given back by a dropped handle again, its attempt counted, unless its
    /// partition went elsewhere meanwhile (the new owner reads it from the committed offset).
    fn deliver_again(&mut self, r: Returned) {
        if !self.ctx.shared.is_current(&r.tp, r.generation) {
            return;
        }
        tracing::debug!(topic = %r.tp.0, partition = r.tp.1, offset = r.record.offset, attempt = r.attempt, "delivering a record again after its delivery was dropped unsettled");
        let first_failure = r.first_failure.unwrap_or_else(Utc::now);
        self.deliver(
            r.tp,
            r.generation,
            r.record,
            r.attempt.saturating_add(1),
            Some(first_failure),
        );
    }

    /// Turns a fetched record into a delivery and queues it for the subscription.
    fn enqueue(&mut self, tp: Tp, generation: u64, record: InRecord) {
        let again = self.handed_out.hand_out(&tp, record.offset);
        let attempt = record.attempt().saturating_add(u32::from(again));
        let first_failure = record.first_failure();
        self.deliver(tp, generation, record, attempt, first_failure);
    }

    fn deliver(
        &mut self,
        tp: Tp,
        generation: u64,
        record: InRecord,
        attempt: u32,
        first_failure: Option<DateTime<Utc>>,
    ) {
        let plan = &self.ctx.plan;
        let ordering_key = match (plan.ordering, &record.key) {
            // Per key within the partition: different keys of one partition run in parallel.
            (Ordering::PerKey, Some(key)) => {
                format!("{}#{}/{}", tp.0, tp.1, String::from_utf8_lossy(key))
            }
            // A partition is Kafka's unit of order: its records are handled one at a time.
            _ => format!("{}#{}", tp.0, tp.1),
        };
        let info = DeliveryInfo {
            topic: plan.topic.clone(),
            group: plan.group.clone(),
            attempt,
            first_failure,
            ordering_key: Some(ordering_key),
        };
        // Decoded before the record moves into its handle; an undecodable one is dead-lettered
        // by the runtime, and the dead letter is the original record.
        let decoded = record
            .decode()
            .map_err(|e| (e, record.value.clone(), record.placeholder_id()));
        self.ctx.shared.lock().outstanding += 1;
        let settle = Box::new(KafkaSettle {
            ctx: self.ctx.clone(),
            tp: tp.clone(),
            generation,
            record,
            attempt,
            first_failure,
            settled: false,
        });
        let delivery = match decoded {
            Ok(message) => Delivery::new(message, info, settle),
            Err((reason, raw, id)) => Delivery::undecodable(raw, Some(&id), reason, info, settle),
        };
        self.out.push_back(Tagged {
            tp,
            generation,
            delivery,
        });
    }

    fn tp(&mut self, topic: &str, partition: i32) -> Tp {
        let name = self
            .topic_names
            .entry(topic.to_owned())
            .or_insert_with(|| Arc::from(topic))
            .clone();
        (name, partition)
    }

    fn pause(&self, tp: &Tp, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, topic = %tp.0, partition = tp.1, pause, "pause/resume failed");
        }
    }

    /// Pauses (or resumes) every assigned partition, except those held for a due time, which
    /// stay paused until then.
    fn set_paused_all(&self, pause: bool) {
        let mut state = self.ctx.shared.lock();
        state.paused_all = pause;
        let mut tpl = TopicPartitionList::new();
        for tp in state.partitions.keys() {
            if pause || !self.held.contains_key(tp) {
                tpl.add_partition(&tp.0, tp.1);
            }
        }
        drop(state);
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        tracing::debug!(pause, partitions = tpl.count(), group = %self.ctx.plan.group, "runtime backpressure");
        if let Err(e) = result {
            tracing::debug!(error = %e, pause, "pausing all partitions failed");
        }
    }

    fn commit(&self, mode: CommitMode) {
        let tpl = self.ctx.shared.lock().commit_list(None);
        if tpl.count() == 0 {
            return;
        }
        match self.consumer.commit(&tpl, mode) {
            Ok(()) if matches!(mode, CommitMode::Sync) => self.ctx.shared.lock().confirm(&tpl),
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(error = %e, group = %self.ctx.plan.group, "offset commit failed")
            }
        }
    }

    /// Stops handing out, waits (bounded) for deliveries still being handled, commits them,
    /// and leaves the group.
    async fn shutdown(mut self) {
        // Never handed out: dropping them releases them; their offsets stay uncommitted.
        self.out.clear();
        self.returned.clear();
        self.held.clear();
        self.ctx.shared.lock().held.clear();
        self.set_paused_all(true);
        let deadline = Instant::now() + self.settings.close_timeout;
        let mut commit_tick = tokio::time::interval(self.settings.commit_interval);
        loop {
            if self.ctx.shared.lock().outstanding == 0 {
                break;
            }
            let consumer = self.consumer.clone();
            tokio::select! {
                // Keeps serving rebalances; anything fetched now is left for the next reader.
                _ = consumer.recv() => {}
                () = self.ctx.shared.released.notified() => {}
                _ = commit_tick.tick() => self.commit(CommitMode::Async),
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(group = %self.ctx.plan.group, "deliveries still unsettled at close; they will be redelivered");
                    break;
                }
            }
        }
        self.commit(CommitMode::Sync);
        let (topic, group) = (self.ctx.plan.topic.clone(), self.ctx.plan.group.clone());
        tracing::debug!(%topic, %group, "leaving the group");
        let Self {
            consumer,
            handed_out,
            ..
        } = self;
        let _turn = handed_out.leaving.lock().await;
        // Closing leaves the group (and runs the revoke callback); it blocks, so not here.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::debug!(%topic, %group, "left the group");
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn log_consume_error(group: &str, e: &KafkaError) {
    use rdkafka::error::RDKafkaErrorCode as Code;
    match e.rdkafka_error_code() {
        // A retry or scheduled topic nobody has created yet: nothing to read there.
        Some(Code::UnknownTopicOrPartition | Code::UnknownTopic) => {
            tracing::debug!(error = %e, group, "subscribed topic does not exist (yet)");
        }
        _ => tracing::warn!(error = %e, group, "consumer error"),
    }
}
