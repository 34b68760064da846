//! The conformance suite: the scenarios of the design, run against every adapter.
//!
//! An adapter crate runs it with one macro call in a test file:
//!
//! ```ignore
//! async fn harness() -> busway_testkit::Harness {
//!     let broker = busway_memory::MemoryBroker::new();
//!     busway_testkit::Harness::new(broker.clone(), broker.clone(), broker)
//! }
//!
//! busway_testkit::conformance_suite! {
//!     harness: harness,
//!     run: [round_trip_preserves_attributes, topic_isolation /* , ... */],
//!     skip: [broker_restart_without_loss: "the in-process broker cannot restart"],
//! }
//! ```
//!
//! That generates `mod conformance` with one `#[tokio::test]` per scenario (so `cargo test`
//! prints `conformance::<scenario> ... ok`), skipped scenarios as `#[ignore]`d tests with their
//! reason, and a test failing when a scenario of [`SCENARIOS`] is neither run nor skipped.

mod scenarios;
pub mod support;

use std::sync::Arc;
use std::time::Duration;

use busway_core::{DeadLetters, Publisher, Subscriber};
use futures::future::BoxFuture;

pub use scenarios::*;

/// Restarts the broker (or cuts every connection to it) and returns once it is back.
pub type Restart = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// What the broker behind a harness can do, and how patient the scenarios should be.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// The adapter's size limit: a message over it must be refused.
    pub max_message_bytes: usize,
    /// A data size under the limit that must round-trip intact.
    pub large_message_bytes: usize,
    /// Whether members of one group share the load when both are connected.
    pub members_share_load: bool,
    /// How long to wait for something that should happen.
    pub patience: Duration,
    /// How long to wait before concluding nothing more arrives.
    pub quiet_period: Duration,
    /// Allowed early arrival for delayed or scheduled deliveries (clock granularity).
    pub timing_tolerance: Duration,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            large_message_bytes: 512 * 1024,
            members_share_load: true,
            patience: Duration::from_secs(30),
            quiet_period: Duration::from_millis(500),
            timing_tolerance: Duration::from_millis(50),
        }
    }
}

/// An adapter under test: its publisher, subscriber, dead-letter access and capabilities.
#[derive(Clone)]
pub struct Harness {
    /// Publishes.
    pub publisher: Arc<dyn Publisher>,
    /// Subscribes.
    pub subscriber: Arc<dyn Subscriber>,
    /// Inspects dead letters.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// What the broker can do.
    pub capabilities: Capabilities,
    /// Restarts the broker, for the restart scenario.
    pub restart: Option<Restart>,
}

impl Harness {
    /// A harness with default capabilities and no restart.
    pub fn new(
        publisher: impl Publisher + 'static,
        subscriber: impl Subscriber + 'static,
        dead_letters: impl DeadLetters + 'static,
    ) -> Self {
        Self {
            publisher: Arc::new(publisher),
            subscriber: Arc::new(subscriber),
            dead_letters: Arc::new(dead_letters),
            capabilities: Capabilities::default(),
            restart: None,
        }
    }

    /// Replaces the capabilities.
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Sets how to restart the broker.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = Some(restart);
        self
    }
}

/// Generates the conformance tests of an adapter; see the [module docs](self).
#[macro_export]
macro_rules! conformance_suite {
    (
        harness: $harness:ident,
        run: [$($run:ident),* $(,)?],
        skip: [$($skip:ident : $reason:literal),* $(,)?] $(,)?
    ) => {
        mod conformance {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $run() {
                    $crate::conformance::$run(super::$harness().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = $reason]
                async fn $skip() {
                    $crate::conformance::$skip(super::$harness().await).await;
                }
            )*
            #[test]
            fn every_scenario_is_run_or_skipped_with_a_reason() {
                let listed: &[&str] = &[$(stringify!($run),)* $(stringify!($skip),)*];
                $crate::conformance::assert_complete(listed);
            }
        }
    };
}

/// Fails when `listed` misses a scenario of [`SCENARIOS`] or names one twice.
pub fn assert_complete(listed: &[&str]) {
    let missing: Vec<_> = SCENARIOS.iter().filter(|s| !listed.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "scenarios neither run nor skipped: {missing:?}"
    );
    let mut sorted = listed.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), listed.len(), "a scenario is listed twice");
}
