//! Rebalance handling: where newly assigned partitions start, and committing what is done
//! before partitions are given away.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use busway_core::{Ordering, StartPosition};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::OffsetTracker;
use super::state::{Partition, Shared};

/// What a subscription reads and how it starts.
pub(crate) struct Plan {
    pub(crate) topic: String,
    pub(crate) group: String,
    pub(crate) scheduled: String,
    pub(crate) start: StartPosition,
    pub(crate) ordering: Ordering,
    pub(crate) tiers: u32,
    /// When `subscribe` was called, in milliseconds since the Unix epoch.
    pub(crate) joined_at: i64,
    /// With `StartPosition::Latest`, taken when `subscribe` was called: the high watermarks of
    /// the topic and the low watermarks of its scheduled topic. A topic partition without a
    /// committed offset starts at its high watermark, so that a message published after
    /// `subscribe` returned is never skipped however late the group assignment arrives; a
    /// scheduled partition starts at its beginning, since a message scheduled before the group
    /// joined may fall due after (see [`Plan::initial`]).
    pub(crate) snapshot: OnceLock<HashMap<(String, i32), i64>>,
}

/// Where a partition without a committed offset starts.
#[derive(Debug, Default, PartialEq, Eq)]
struct Initial {
    /// The first offset to read; `None` is the log's beginning.
    offset: Option<i64>,
    /// Records published and due before this time are passed over (scheduled partitions).
    skip_due_before: Option<i64>,
}

impl Plan {
    /// Where a partition the group has never committed starts.
    ///
    /// With `Latest`, a group receives what is published after it joined, and every scheduled
    /// message that falls due after it joined, wherever in the scheduled topic it lies: those
    /// published and due before are passed over. Which member starts a scheduled partition
    /// first fixes it with a commit; a member that later finds that commit reads on from it
    /// without passing anything over (at worst an old scheduled message reaches the group once,
    /// never one of its own is skipped).
    fn initial(&self, topic: &str, partition: i32) -> Initial {
        if self.start == StartPosition::Earliest
            || !(topic == self.topic || topic == self.scheduled)
        {
            return Initial::default();
        }
        let offset = self
            .snapshot
            .get()
            .and_then(|s| s.get(&(topic.to_owned(), partition)).copied());
        Initial {
            offset,
            skip_due_before: (topic == self.scheduled).then_some(self.joined_at),
        }
    }

    /// Whether records of `topic` carry a due time (retry and scheduled topics).
    pub(crate) fn is_delayed(&self, topic: &str) -> bool {
        topic != self.topic
    }
}

pub(crate) struct KafkaContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) plan: Arc<Plan>,
    pub(crate) request_timeout: Duration,
}

impl ClientContext for KafkaContext {}

impl ConsumerContext for KafkaContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, tpl, cooperative);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, tpl, cooperative);
            }
            other => {
                tracing::warn!(error = ?other, group = %self.plan.group, "rebalance failed; dropping the assignment");
                self.revoke(consumer, tpl, cooperative);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.shared.lock().confirm(offsets),
            // Not confirmed: the next periodic commit sends it again.
            Err(e) => tracing::debug!(error = %e, group = %self.plan.group, "offset commit failed"),
        }
    }
}

impl KafkaContext {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, cooperative: bool) {
        // Without the committed offsets, librdkafka resolves them itself (falling back to the
        // earliest offset): never skip what the group has not committed.
        let (committed, known) = match consumer.committed_offsets(tpl.clone(), self.request_timeout)
        {
            Ok(c) => (c, true),
            Err(e) => {
                tracing::warn!(error = %e, group = %self.plan.group, "reading committed offsets failed; resuming from the stored ones");
                (tpl.clone(), false)
            }
        };
        let mut assignment = TopicPartitionList::new();
        let mut first_commit = TopicPartitionList::new();
        {
            let mut state = self.shared.lock();
            for e in committed.elements() {
                let (topic, partition) = (e.topic(), e.partition());
                let committed = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                };
                let tp: super::state::Tp = (Arc::from(topic), partition);
                // Back after an eager rebalance with nobody's progress in between: carry on
                // where this member was, its in-flight deliveries still valid.
                if let Some(kept) = state.retained.remove(&tp)
                    && known
                    && committed == kept.offsets.commit_point()
                {
                    let offset = kept
                        .offsets
                        .next_fetch()
                        .map_or(Offset::Stored, Offset::Offset);
                    let _ = assignment.add_partition_offset(topic, partition, offset);
                    state.partitions.insert(tp, kept);
                    continue;
                }
                // Without knowing the committed offset, nothing is passed over.
                let initial = if known && committed.is_none() {
                    self.plan.initial(topic, partition)
                } else {
                    Initial::default()
                };
                let start = if known {
                    committed.or(initial.offset)
                } else {
                    None
                };
                if committed.is_none()
                    && let Some(o) = start
                {
                    // Fixes the group's position now, so that a member taking this partition
                    // over later starts here too instead of at its own "latest".
                    let _ = first_commit.add_partition_offset(topic, partition, Offset::Offset(o));
                }
                let offset = match (start, known) {
                    (Some(o), _) => Offset::Offset(o),
                    (None, true) => Offset::Beginning,
                    (None, false) => Offset::Stored,
                };
                let _ = assignment.add_partition_offset(topic, partition, offset);
                let generation = state.new_generation();
                state.partitions.insert(
                    tp,
                    Partition {
                        generation,
                        offsets: OffsetTracker::starting_at(start),
                        committed,
                        skip_due_before: initial.skip_due_before,
                    },
                );
            }
            // Not given back: whatever is in flight there belongs to the new owner now.
            state.retained.clear();
        }
        if first_commit.count() > 0 {
            match consumer.commit(&first_commit, CommitMode::Sync) {
                Ok(()) => self.shared.lock().confirm(&first_commit),
                Err(e) => tracing::warn!(error = %e, "committing start positions failed"),
            }
        }
        let result = if cooperative {
            consumer.incremental_assign(&assignment)
        } else {
            consumer.assign(&assignment)
        };
        if let Err(e) = result {
            tracing::error!(error = %e, group = %self.plan.group, "assigning partitions failed");
        }
        // A fresh assignment is unpaused: pause again what the driver keeps paused.
        let to_pause = {
            let state = self.shared.lock();
            let mut tpl = TopicPartitionList::new();
            for e in assignment.elements() {
                let tp: super::state::Tp = (Arc::from(e.topic()), e.partition());
                if state.paused_all || state.held.contains(&tp) {
                    tpl.add_partition(e.topic(), e.partition());
                }
            }
            tpl
        };
        if to_pause.count() > 0
            && let Err(e) = consumer.pause(&to_pause)
        {
            tracing::warn!(error = %e, "pausing newly assigned partitions failed");
        }
        tracing::debug!(group = %self.plan.group, topic = %self.plan.topic, partitions = assignment.count(), "partitions assigned");
        self.shared.assigned.send_replace(true);
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, cooperative: bool) {
        tracing::debug!(group = %self.plan.group, topic = %self.plan.topic, "revoking");
        // Commit what is done before another member takes over; work still in flight is given
        // back (the new owner reads it again from the committed offset).
        let to_commit = self.shared.lock().commit_list(Some(tpl));
        if to_commit.count() > 0 && !consumer.assignment_lost() {
            match consumer.commit(&to_commit, CommitMode::Sync) {
                Ok(()) => self.shared.lock().confirm(&to_commit),
                Err(e) => {
                    tracing::warn!(error = %e, group = %self.plan.group, "commit on revoke failed")
                }
            }
        }
        {
            let mut state = self.shared.lock();
            for e in tpl.elements() {
                let tp = (Arc::from(e.topic()), e.partition());
                if let Some(p) = state.partitions.remove(&tp)
                    && !cooperative
                    && !consumer.assignment_lost()
                {
                    state.retained.insert(tp, p);
                }
            }
        }
        let result = if cooperative {
            consumer.incremental_unassign(tpl)
        } else {
            consumer.unassign()
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, group = %self.plan.group, "unassigning partitions failed");
        }
        tracing::debug!(group = %self.plan.group, topic = %self.plan.topic, partitions = tpl.count(), "partitions revoked");
    }
}
