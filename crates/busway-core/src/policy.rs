//! Retry and redelivery policies: how often and how long to wait between attempts.

use std::time::Duration;

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};
use serde::Deserialize;

/// The wait between two attempts.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Backoff {
    /// No wait.
    Immediate,
    /// The same wait every time.
    Fixed {
        /// The wait.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// `initial`, then multiplied by `factor` each time, capped at `max_delay`; with `jitter`, a
    /// random extra of up to 100% of the wait is added so that many consumers failing together
    /// do not retry in lockstep.
    Exponential {
        /// The first wait.
        #[serde(with = "humantime_serde")]
        initial: Duration,
        /// Growth per attempt.
        factor: f32,
        /// The largest wait before jitter.
        #[serde(with = "humantime_serde")]
        max_delay: Duration,
        /// Whether to add random jitter.
        jitter: bool,
    },
}

impl Backoff {
    /// Exponential from `initial`, doubling, capped at 5 minutes, with jitter.
    pub fn exponential(initial: Duration) -> Self {
        Self::Exponential {
            initial,
            factor: 2.0,
            max_delay: Duration::from_secs(300),
            jitter: true,
        }
    }

    /// The successive waits, at most `max_times` of them, and no more than `total` summed.
    pub fn delays(
        &self,
        max_times: usize,
        total: Option<Duration>,
    ) -> Box<dyn Iterator<Item = Duration> + Send + Sync + Unpin> {
        match self {
            Self::Immediate => Box::new(std::iter::repeat_n(Duration::ZERO, max_times)),
            Self::Fixed { delay } => {
                let mut b = ConstantBuilder::new()
                    .with_delay(*delay)
                    .with_max_times(max_times);
                if let Some(total) = total {
                    // Constant backoff has no total cap of its own; cut the count instead.
                    let fits = total.as_nanos() / delay.as_nanos().max(1);
                    b = b
                        .with_max_times(max_times.min(usize::try_from(fits).unwrap_or(usize::MAX)));
                }
                Box::new(b.build())
            }
            Self::Exponential {
                initial,
                factor,
                max_delay,
                jitter,
            } => {
                let mut b = ExponentialBuilder::new()
                    .with_min_delay(*initial)
                    .with_factor(*factor)
                    .with_max_delay(*max_delay)
                    .with_max_times(max_times)
                    .with_total_delay(total);
                if *jitter {
                    b = b.with_jitter();
                }
                // backon multiplies in f32 (400 ms comes out as 400.000006 ms); round to the
                // microsecond so configured waits are the waits that happen.
                Box::new(b.build().map(round_to_micros))
            }
        }
    }

    /// The wait before attempt `n + 1` after `n` failed attempts (`n >= 1`).
    pub fn delay_after(&self, failed_attempts: u32) -> Duration {
        let n = failed_attempts.max(1) as usize;
        self.delays(n, None).last().unwrap_or(Duration::ZERO)
    }
}

fn round_to_micros(d: Duration) -> Duration {
    let micros = (d.as_nanos() + 500) / 1000;
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// In-process retries of one delivery, before it is given back to the broker.
///
/// ```
/// use std::time::Duration;
/// use busway_core::RetryPolicy;
///
/// let policy = RetryPolicy::exponential(Duration::from_millis(100), 4)
///     .max_elapsed(Duration::from_secs(10));
/// assert_eq!(policy.max_attempts, 4);
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RetryPolicy {
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// Stop retrying once this much time has passed since the first attempt started.
    #[serde(default, with = "humantime_serde")]
    pub max_elapsed: Option<Duration>,
}

impl RetryPolicy {
    /// No in-process retry: failures go straight to redelivery.
    pub fn none() -> Self {
        Self {
            backoff: Backoff::Immediate,
            max_attempts: 1,
            max_elapsed: None,
        }
    }
    /// `max_attempts` attempts, `delay` apart.
    pub fn fixed(delay: Duration, max_attempts: u32) -> Self {
        Self {
            backoff: Backoff::Fixed { delay },
            max_attempts: max_attempts.max(1),
            max_elapsed: None,
        }
    }
    /// `max_attempts` attempts with exponential backoff and jitter from `initial`.
    pub fn exponential(initial: Duration, max_attempts: u32) -> Self {
        Self {
            backoff: Backoff::exponential(initial),
            max_attempts: max_attempts.max(1),
            max_elapsed: None,
        }
    }
    /// Caps the time spent retrying one delivery.
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.max_elapsed = Some(limit);
        self
    }
    /// Replaces the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

impl Default for RetryPolicy {
    /// Three attempts, 100 ms then 200 ms apart (plus jitter).
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100), 3)
    }
}

/// Durable redelivery by the broker once in-process retries are spent, then the DLQ.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RedeliveryPolicy {
    /// Deliveries in all, the first included; after the last failed one the message is
    /// dead-lettered with reason `max_attempts_exceeded`.
    pub max_deliveries: u32,
    /// How long the broker holds a message back before delivering it again.
    pub backoff: Backoff,
}

impl RedeliveryPolicy {
    /// `max_deliveries` deliveries, the broker waiting per `backoff` between them.
    pub fn new(max_deliveries: u32, backoff: Backoff) -> Self {
        Self {
            max_deliveries: max_deliveries.max(1),
            backoff,
        }
    }
    /// The wait before redelivering after delivery number `attempt` failed.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.backoff.delay_after(attempt)
    }

    /// The longest a message can spend between its first delivery and its last, waiting for
    /// redeliveries (jitter at its largest, handling time not counted). Records of processed
    /// ids must be kept longer than this, or a late redelivery is not recognised as a duplicate.
    pub fn longest_window(&self) -> Duration {
        // Jitter adds up to one more wait; compute the waits without it, then double them.
        let (backoff, jitter) = match &self.backoff {
            Backoff::Exponential {
                initial,
                factor,
                max_delay,
                jitter,
            } => (
                Backoff::Exponential {
                    initial: *initial,
                    factor: *factor,
                    max_delay: *max_delay,
                    jitter: false,
                },
                *jitter,
            ),
            other => (other.clone(), false),
        };
        (1..self.max_deliveries)
            .map(|attempt| {
                let wait = backoff.delay_after(attempt);
                if jitter { wait * 2 } else { wait }
            })
            .sum()
    }
}

impl Default for RedeliveryPolicy {
    /// Five deliveries, 1 s, 2 s, 4 s, 8 s apart (plus jitter).
    fn default() -> Self {
        Self::new(5, Backoff::exponential(Duration::from_secs(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_without_jitter_doubles_up_to_the_cap() {
        let b = Backoff::Exponential {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_millis(500),
            jitter: false,
        };
        let delays: Vec<_> = b.delays(5, None).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 500, 500]);
        assert_eq!(b.delay_after(3), Duration::from_millis(400));
    }

    #[test]
    fn jitter_stays_within_one_extra_wait() {
        let b = Backoff::exponential(Duration::from_millis(100));
        for d in b.delays(1, None) {
            assert!(
                d >= Duration::from_millis(100) && d <= Duration::from_millis(200),
                "{d:?}"
            );
        }
    }

    #[test]
    fn the_redelivery_window_sums_every_wait_at_its_longest() {
        let fixed = RedeliveryPolicy::new(
            4,
            Backoff::Fixed {
                delay: Duration::from_secs(10),
            },
        );
        assert_eq!(fixed.longest_window(), Duration::from_secs(30));
        // 1 + 2 + 4 + 8 s, doubled for jitter.
        assert_eq!(
            RedeliveryPolicy::default().longest_window(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn total_delay_caps_fixed_and_exponential() {
        let fixed = Backoff::Fixed {
            delay: Duration::from_secs(1),
        };
        assert_eq!(
            fixed.delays(10, Some(Duration::from_millis(2500))).count(),
            2
        );
        let exp = Backoff::Exponential {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: false,
        };
        // 1 + 2 fit into 4 s; adding 4 would not.
        assert_eq!(exp.delays(10, Some(Duration::from_secs(4))).count(), 2);
    }
}
