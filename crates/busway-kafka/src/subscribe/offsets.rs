//! Which offset of a partition may be committed: the lowest offset still in flight, or, when
//! nothing is, the one after the highest received.
//!
//! Deliveries of one partition finish in any order (redeliveries and dead letters take a detour
//! through other topics, a dropped delivery comes back later); the committed offset never passes
//! a record that is still in flight, so a crash redelivers it rather than losing it. Offsets are
//! tracked as received, not assumed contiguous: Kafka logs have gaps (compaction, transaction
//! markers).
//!
//! Only records in flight are remembered: a record that stays unsettled for long (its dead
//! letter refused, say) costs one entry, however many records behind it are handled meanwhile.
//! The ledger is as large as the partition's work in progress, never larger.

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    /// Received offsets whose records are not done yet.
    in_flight: BTreeSet<i64>,
    /// The highest offset received, to drop records fetched twice (e.g. after a resume).
    highest: Option<i64>,
    /// Where consumption started, until the first record arrives. `None` when unknown.
    start: Option<i64>,
}

impl OffsetTracker {
    /// A tracker for a partition whose consumption starts at `start` (when known).
    pub(crate) fn starting_at(start: Option<i64>) -> Self {
        Self {
            start,
            ..Self::default()
        }
    }

    /// Records that `offset` was fetched; false if it was fetched before (a duplicate to drop).
    pub(crate) fn received(&mut self, offset: i64) -> bool {
        if self.highest.is_some_and(|h| offset <= h) {
            return false;
        }
        self.highest = Some(offset);
        self.in_flight.insert(offset);
        true
    }

    /// Marks `offset` as fully handled; unknown offsets change nothing.
    pub(crate) fn done(&mut self, offset: i64) {
        self.in_flight.remove(&offset);
    }

    /// The offset to commit (the next record to read after a restart): the first record still
    /// in flight, else the one after the last received, else where consumption started.
    pub(crate) fn commit_point(&self) -> Option<i64> {
        self.in_flight
            .first()
            .copied()
            .or_else(|| self.highest.map(|h| h + 1))
            .or(self.start)
    }

    /// Where fetching continues: after the last record received, else at the commit point.
    pub(crate) fn next_fetch(&self) -> Option<i64> {
        self.highest.map(|h| h + 1).or(self.start)
    }

    /// Offsets the tracker remembers.
    #[cfg(test)]
    pub(crate) fn ledger_len(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_point_stops_at_the_first_record_ledger_len() {
        let mut t = OffsetTracker::starting_at(Some(10));
        assert_eq!(t.commit_point(), Some(10));
        for o in [10, 11, 12, 14] {
            assert!(t.received(o));
        }
        t.done(11);
        t.done(12);
        assert_eq!(t.commit_point(), Some(10), "10 is still in flight");
        t.done(10);
        assert_eq!(t.commit_point(), Some(14));
        t.done(14);
        assert_eq!(
            t.commit_point(),
            Some(15),
            "the gap at 13 was never a record"
        );
        assert_eq!(t.ledger_len(), 0);
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

    /// A record that stays in flight (its settlement keeps failing) holds the commit point, and
    /// costs one entry however many records behind it are handled.
    #[test]
    fn a_stuck_record_holds_commits_without_growing_the_ledger() {
        let mut t = OffsetTracker::starting_at(Some(0));
        assert!(t.received(0));
        for o in 1..100_000 {
            assert!(t.received(o));
            t.done(o);
            assert!(t.ledger_len() <= 1, "the ledger grew to {}", t.ledger_len());
        }
        assert_eq!(t.commit_point(), Some(0), "commits passed the stuck record");
        t.done(0);
        assert_eq!(t.commit_point(), Some(100_000));
        assert_eq!(t.ledger_len(), 0);
    }
}
