//! Which offset of a partition may be committed: the highest contiguous fully-handled one, + 1.
//!
//! Deliveries of one partition finish in any order (redeliveries and dead letters take a detour
//! through other topics); the committed offset never passes a record that is still in flight, so
//! a crash redelivers it rather than losing it. Offsets are tracked as received, not assumed
//! contiguous: Kafka logs have gaps (compaction, transaction markers).

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    /// Received offsets not yet behind the commit point, and whether each is done.
    pending: BTreeMap<i64, bool>,
    /// Every record before this offset is done: what to commit. `None` until known.
    safe: Option<i64>,
    /// The highest offset received, to drop records fetched twice (e.g. after a resume).
    highest: Option<i64>,
}

impl OffsetTracker {
    /// A tracker for a partition whose consumption starts at `start` (when known).
    pub(crate) fn starting_at(start: Option<i64>) -> Self {
        Self {
            safe: start,
            ..Self::default()
        }
    }

    /// Records that `offset` was fetched; false if it was fetched before (a duplicate to drop).
    pub(crate) fn received(&mut self, offset: i64) -> bool {
        if self.highest.is_some_and(|h| offset <= h) {
            return false;
        }
        self.highest = Some(offset);
        if self.safe.is_none() {
            self.safe = Some(offset);
        }
        self.pending.insert(offset, false);
        true
    }

    /// Marks `offset` as fully handled and moves the commit point over every done prefix.
    pub(crate) fn done(&mut self, offset: i64) {
        if let Some(done) = self.pending.get_mut(&offset) {
            *done = true;
        }
        while let Some((&first, &true)) = self.pending.first_key_value() {
            self.pending.pop_first();
            self.safe = Some(first + 1);
        }
    }

    /// The offset to commit (the next record to read after a restart).
    pub(crate) fn commit_point(&self) -> Option<i64> {
        self.safe
    }

    /// Where fetching continues: after the last record received, else at the commit point.
    pub(crate) fn next_fetch(&self) -> Option<i64> {
        self.highest.map(|h| h + 1).or(self.safe)
    }

    /// Records received and not yet done.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.values().filter(|d| !**d).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_point_stops_at_the_first_record_in_flight() {
        let mut t = OffsetTracker::starting_at(Some(10));
        assert_eq!(t.commit_point(), Some(10));
        for o in [10, 11, 12, 14] {
            assert!(t.received(o));
        }
        t.done(11);
        t.done(12);
        assert_eq!(t.commit_point(), Some(10), "10 is still in flight");
        t.done(10);
        assert_eq!(t.commit_point(), Some(13));
        t.done(14);
        assert_eq!(
            t.commit_point(),
            Some(15),
            "the gap at 13 was never a record"
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn unknown_start_begins_at_the_first_record_and_duplicates_are_refused() {
        let mut t = OffsetTracker::starting_at(None);
        assert_eq!(t.commit_point(), None);
        assert!(t.received(5));
        assert_eq!(t.commit_point(), Some(5));
        assert!(!t.received(5));
        assert!(!t.received(4));
        t.done(5);
        assert_eq!(t.commit_point(), Some(6));
        t.done(99);
        assert_eq!(t.commit_point(), Some(6), "unknown offsets change nothing");
    }
}
