//! Keeping a consumer alive: what it needs to subscribe again, how long to wait between tries,
//! and saying loudly when its subscription was lost.

use std::sync::Arc;
use std::time::Duration;

use super::Stats;
use crate::broker::{SubscribeOptions, Subscriber, Subscription};
use crate::error::Result;
use crate::policy::Backoff;

/// What a consumer subscribes to, kept so that it can subscribe again.
pub(crate) struct Spec {
    pub(crate) subscriber: Arc<dyn Subscriber>,
    pub(crate) topic: String,
    pub(crate) group: String,
    pub(crate) options: SubscribeOptions,
}

impl Spec {
    pub(crate) async fn subscribe(&self) -> Result<Box<dyn Subscription>> {
        self.subscriber
            .subscribe(&self.topic, &self.group, self.options.clone())
            .await
    }
}

/// Growing waits between tries of something that keeps failing: 100 ms doubling to 30 s, with
/// jitter so that many consumers do not retry in step. Never a hot loop.
pub(crate) struct Pause {
    failures: u32,
}

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

impl Pause {
    pub(crate) fn new() -> Self {
        Self { failures: 0 }
    }

    /// The wait before the next try.
    pub(crate) fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        Backoff::Exponential {
            initial: FIRST_PAUSE,
            factor: 2.0,
            max_delay: LONGEST_PAUSE,
            jitter: true,
        }
        .delay_after(self.failures.min(16))
    }

    /// Forgets the failures after a success.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Reports a subscription that ended or failed without being asked to: an ERROR event, a
/// metric, and the consumer's counters.
pub(crate) fn interrupted(spec: &Spec, stats: &Stats, cause: &str) {
    Stats::bump(&stats.interruptions);
    metrics::counter!(
        "busway_consumer_interruptions_total",
        "topic" => spec.topic.clone(),
        "group" => spec.group.clone(),
    )
    .increment(1);
    tracing::error!(
        topic = %spec.topic,
        group = %spec.group,
        cause,
        "the consumer lost its subscription; subscribing again"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_reset() {
        let mut pause = Pause::new();
        let first = pause.next();
        assert!(
            first >= FIRST_PAUSE && first <= FIRST_PAUSE * 2,
            "{first:?}"
        );
        for _ in 0..40 {
            let wait = pause.next();
            assert!(wait <= LONGEST_PAUSE * 2, "{wait:?}");
        }
        assert!(pause.next() >= LONGEST_PAUSE);
        pause.reset();
        assert!(pause.next() <= FIRST_PAUSE * 2);
    }
}
