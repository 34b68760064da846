//! Per-key ordering: deliveries with the same partition key run one after another, in the order
//! they were received; different keys run in parallel.

use std::collections::HashMap;

use tokio::sync::oneshot;

/// The tail of each key's chain: a receiver that completes when the key's latest job is done.
#[derive(Default)]
pub(crate) struct Lanes {
    tails: HashMap<String, oneshot::Receiver<()>>,
    next_cleanup: usize,
}

/// A job's place in its key's chain.
pub(crate) struct LaneTicket {
    /// Completes when the previous job of the same key is done.
    pub(crate) previous: Option<oneshot::Receiver<()>>,
    /// Dropped when this job is done, releasing the next one; never read, held for its drop.
    #[allow(dead_code)]
    pub(crate) done: oneshot::Sender<()>,
}

impl Lanes {
    /// Appends a job for `key` and returns its ticket.
    pub(crate) fn enter(&mut self, key: &str) -> LaneTicket {
        let (done, tail) = oneshot::channel();
        let previous = self.tails.insert(key.to_owned(), tail);
        if self.tails.len() > self.next_cleanup {
            // Forget keys whose chain has finished, so the map tracks only busy keys.
            self.tails
                .retain(|_, rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
            self.next_cleanup = (self.tails.len() * 2).max(1024);
        }
        LaneTicket { previous, done }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_for_the_previous_job_and_finished_keys_are_forgotten() {
        let mut lanes = Lanes::default();
        let first = lanes.enter("a");
        assert!(first.previous.is_none());
        let mut second = lanes.enter("a");
        let mut waiting = second
            .previous
            .take()
            .expect("second job waits for the first");
        assert!(matches!(
            waiting.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        drop(first.done);
        assert!(
            waiting.await.is_err(),
            "dropping `done` releases the next job"
        );
        assert!(lanes.enter("b").previous.is_none());

        drop(second.done);
        for i in 0..2000 {
            drop(lanes.enter(&i.to_string()).done);
        }
        assert!(lanes.tails.len() < 2000);
    }
}
