//! The sending side of a queue or topic: sequence numbers and duplicate detection.

use std::collections::{HashMap, VecDeque};

use crate::config::DuplicateDetection;

use super::duration_ms;

/// Duplicate detection history of a queue or topic.
#[derive(Debug, Default)]
pub(super) struct Dedup {
    pub(super) config: DuplicateDetection,
    pub(super) seen: HashMap<String, i64>,
    pub(super) order: VecDeque<(i64, String)>,
}

impl Dedup {
    /// Records `id`; false when it was already seen inside the window.
    pub(super) fn admit(&mut self, id: &str, now_ms: i64) -> bool {
        if !self.config.enabled {
            return true;
        }
        self.purge(now_ms);
        if self.seen.contains_key(id) {
            return false;
        }
        self.seen.insert(id.to_string(), now_ms);
        self.order.push_back((now_ms, id.to_string()));
        true
    }

    pub(super) fn purge(&mut self, now_ms: i64) {
        let window = duration_ms(self.config.window);
        while let Some((at, _)) = self.order.front() {
            if now_ms - at < window {
                break;
            }
            if let Some((at, id)) = self.order.pop_front()
                && self.seen.get(&id) == Some(&at)
            {
                self.seen.remove(&id);
            }
        }
    }
}

/// The sending side of a queue or topic: sequence numbers and duplicate detection.
#[derive(Debug, Default)]
pub(super) struct SendSide {
    pub(super) next_seq: i64,
    pub(super) dedup: Dedup,
}

impl SendSide {
    pub(super) fn new(config: DuplicateDetection) -> Self {
        Self {
            next_seq: 1,
            dedup: Dedup {
                config,
                ..Dedup::default()
            },
        }
    }
    pub(super) fn take_seq(&mut self) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}
