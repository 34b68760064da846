//! State shared by a subscription's driver task, its rebalance callbacks and its settlement
//! handles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, watch};

use super::offsets::OffsetTracker;

/// A topic partition.
pub(crate) type Tp = (Arc<str>, i32);

/// One assigned partition.
pub(crate) struct Partition {
    /// Changes on every (re)assignment: settlements of an older generation are ignored, since
    /// the partition may have been consumed by another member in between.
    pub(crate) generation: u64,
    pub(crate) offsets: OffsetTracker,
    /// The last offset the broker confirmed as committed.
    pub(crate) committed: Option<i64>,
    /// For a scheduled partition this member started with no committed offset under
    /// `StartPosition::Latest`: records published and due before this time (ms since the
    /// epoch), when the group joined, are not the group's and are passed over.
    pub(crate) skip_due_before: Option<i64>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) partitions: HashMap<Tp, Partition>,
    /// Partitions revoked by an eager rebalance, kept until the assignment that follows: if one
    /// comes back unchanged, its in-flight deliveries stay valid instead of being read twice.
    pub(crate) retained: HashMap<Tp, Partition>,
    /// Partitions the driver keeps paused until a held record is due.
    pub(crate) held: std::collections::HashSet<Tp>,
    next_generation: u64,
    /// Deliveries handed out (or queued to be) and neither settled nor dropped.
    pub(crate) outstanding: usize,
    /// Whether every assigned partition is paused because the runtime stopped pulling.
    pub(crate) paused_all: bool,
}

impl State {
    pub(crate) fn new_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    pub(crate) fn generation(&self, tp: &Tp) -> Option<u64> {
        self.partitions
            .get(tp)
            .or_else(|| self.retained.get(tp))
            .map(|p| p.generation)
    }

    /// Offsets to commit: every partition whose commit point moved past what was committed.
    pub(crate) fn commit_list(&self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), p) in &self.partitions {
            if only.is_some_and(|o| o.find_partition(topic, *partition).is_none()) {
                continue;
            }
            if let Some(offset) = p.offsets.commit_point()
                && p.committed != Some(offset)
            {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset));
            }
        }
        tpl
    }

    /// Records that the broker confirmed `tpl`.
    pub(crate) fn confirm(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            if let (Offset::Offset(o), Some(p)) = (
                e.offset(),
                self.partitions
                    .get_mut(&(Arc::from(e.topic()), e.partition())),
            ) && p.committed.is_none_or(|c| c < o)
            {
                p.committed = Some(o);
            }
        }
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a delivery is settled or dropped.
    pub(crate) released: Notify,
    /// Flips to true on the first assignment, so `subscribe` can wait for it.
    pub(crate) assigned: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            released: Notify::new(),
            assigned: watch::Sender::new(false),
        }
    }

    /// The state; a poisoned lock is recovered, the data stays consistent per operation.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `generation` is still the current one of `tp`.
    pub(crate) fn is_current(&self, tp: &Tp, generation: u64) -> bool {
        self.lock().generation(tp) == Some(generation)
    }

    /// Marks a record done, if its partition is still ours in the same generation; false when
    /// it is not (the record will be read again by the partition's next owner).
    pub(crate) fn done(&self, tp: &Tp, generation: u64, offset: i64) -> bool {
        let mut state = self.lock();
        let state = &mut *state;
        match state
            .partitions
            .get_mut(tp)
            .or_else(|| state.retained.get_mut(tp))
        {
            Some(p) if p.generation == generation => {
                p.offsets.done(offset);
                true
            }
            _ => false,
        }
    }

    /// A delivery was settled or dropped.
    pub(crate) fn release(&self) {
        let mut state = self.lock();
        state.outstanding = state.outstanding.saturating_sub(1);
        drop(state);
        self.released.notify_one();
    }
}

/// Per group, the highest offset of each partition this process has handed out.
///
/// Kafka keeps no delivery count. A record read again at or below that offset was handed out
/// before and not committed, so it is a redelivery (its member died, closed or lost the
/// partition): its attempt is one more than its headers say.
#[derive(Default)]
pub(crate) struct HandedOut {
    groups: Mutex<HashMap<String, Arc<GroupHandedOut>>>,
}

impl HandedOut {
    /// The record of one group, shared by every subscription of it in this process.
    pub(crate) fn group(&self, group: &str) -> Arc<GroupHandedOut> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.entry(group.to_owned()).or_default().clone()
    }
}

#[derive(Default)]
pub(crate) struct GroupHandedOut {
    highest: Mutex<HashMap<Tp, i64>>,
    /// Held while a member of this group leaves it: members of one process leave one after the
    /// other, never in the middle of each other's rebalance.
    pub(crate) leaving: tokio::sync::Mutex<()>,
}

impl GroupHandedOut {
    /// Records a hand-out; true when the record was handed out before.
    pub(crate) fn hand_out(&self, tp: &Tp, offset: i64) -> bool {
        let mut highest = self.highest.lock().unwrap_or_else(|p| p.into_inner());
        match highest.get_mut(tp) {
            Some(h) => {
                let again = offset <= *h;
                *h = (*h).max(offset);
                again
            }
            None => {
                highest.insert(tp.clone(), offset);
                false
            }
        }
    }
}
