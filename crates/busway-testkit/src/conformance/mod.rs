//! The conformance suite: the scenarios of the design, run against every adapter.
//!
//! An adapter crate runs it with one macro call in a test file:
//!
//! ```ignore
//! async fn harness() -> busway_testkit::Harness {
//!     busway_testkit::Harness::new(busway_memory::MemoryBroker::new())
//! }
//!
//! busway_testkit::conformance_suite! {
//!     harness: harness,
//!     lacks: [survives_broker_restart, remote],
//!     skip: [],
//! }
//! ```
//!
//! That generates `mod conformance` with one `#[tokio::test]` per scenario of [`SCENARIOS`] (so
//! `cargo test` prints `conformance::<scenario> ... ok`): every scenario runs unless it is
//! skipped, and a skipped one is an `#[ignore]`d test showing its reason. A scenario added to the
//! suite therefore runs on every adapter at once.
//!
//! Scenarios are skipped by capability: `lacks` names the [`busway_core::Capabilities`] the
//! broker does not have ([`LACKABLE`]), and the suite skips the scenarios that need them, with
//! the reason it defines for each, in one place. A generated test checks that the list is the
//! one the broker reports (`Broker::capabilities` through the harness), so it cannot drift.
//! `skip` is left for reasons of the test setup, not of the broker (a scenario that runs in
//! another file against a private broker, say), each with its reason. `only: [..]` instead of `skip: [..]` generates
//! just the listed scenarios, for a second test file that needs a harness of its own (e.g. a
//! private broker to restart).

mod scenarios;
pub mod support;

use std::sync::Arc;
use std::time::Duration;

use busway_core::{Broker, DeadLetters, Publisher, Scheduler, Subscriber};
use futures::future::BoxFuture;

pub use scenarios::*;

/// Something a harness does to its broker or connections (restart the broker, cut connections);
/// returns once it is done.
pub type BrokerAction = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Restarts the broker (or cuts every connection to it) and returns once it is back.
pub type Restart = BrokerAction;

/// Makes the broker refuse (`true`) or accept again (`false`) dead letters of a group:
/// `(topic, group, refuse)`.
pub type DeadLetterFault =
    Arc<dyn Fn(String, String, bool) -> BoxFuture<'static, ()> + Send + Sync>;

/// What the scenarios may expect of the broker behind a harness: its sizes, whether members
/// share load, and how patient to be. (What the broker can do at all is its
/// [`busway_core::Capabilities`], in [`Harness::broker`].)
#[derive(Clone, Debug)]
pub struct Expectations {
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

impl Default for Expectations {
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

/// An adapter under test: its publisher, subscriber, dead-letter access, scheduler,
/// capabilities and what to expect of it.
#[derive(Clone)]
pub struct Harness {
    /// Publishes.
    pub publisher: Arc<dyn Publisher>,
    /// Subscribes.
    pub subscriber: Arc<dyn Subscriber>,
    /// Inspects dead letters.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Schedules, where the broker can ([`Broker::scheduler`]).
    pub scheduler: Option<Arc<dyn Scheduler>>,
    /// What the broker can do, as its adapter reports it ([`Broker::capabilities`]).
    pub broker: busway_core::Capabilities,
    /// Sizes and patience for this broker's scenarios.
    pub expect: Expectations,
    /// Restarts the broker, for the restart scenario.
    pub restart: Option<Restart>,
    /// Cuts the connections of this harness's publisher and subscriber (not other clients'),
    /// as a network failure would; the adapter must reconnect by itself.
    pub cut_connections: Option<BrokerAction>,
    /// Makes the broker refuse a group's dead letters, for the failed-settlement scenario.
    pub refuse_dead_letters: Option<DeadLetterFault>,
}

impl Harness {
    /// A harness on `broker` with default sizes and patience, and no restart.
    pub fn new(broker: impl Broker) -> Self {
        let broker = Arc::new(broker);
        Self {
            publisher: broker.clone(),
            subscriber: broker.clone(),
            dead_letters: broker.clone(),
            broker: broker.capabilities(),
            scheduler: broker.scheduler(),
            expect: Expectations::default(),
            restart: None,
            cut_connections: None,
            refuse_dead_letters: None,
        }
    }

    /// Replaces what to expect of the broker.
    pub fn expectations(mut self, expect: Expectations) -> Self {
        self.expect = expect;
        self
    }

    /// Sets how to restart the broker.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = Some(restart);
        self
    }

    /// Sets how to cut this harness's connections.
    pub fn cut_connections(mut self, cut: BrokerAction) -> Self {
        self.cut_connections = Some(cut);
        self
    }

    /// Sets how to make the broker refuse dead letters.
    pub fn refuse_dead_letters(mut self, fault: DeadLetterFault) -> Self {
        self.refuse_dead_letters = Some(fault);
        self
    }
}

/// The capabilities a broker may lack that some scenarios need, as `lacks` names them.
pub const LACKABLE: &[&str] = &[
    "survives_broker_restart",
    "remote",
    "scheduling",
    "per_key_ordering",
];

/// Fails unless `lacks` names exactly the [`LACKABLE`] capabilities `broker` does not have.
pub fn assert_lacks(broker: &busway_core::Capabilities, lacks: &[&str]) {
    let has = |name: &str| match name {
        "survives_broker_restart" => broker.survives_broker_restart,
        "remote" => broker.remote,
        "scheduling" => broker.scheduling,
        "per_key_ordering" => broker.per_key_ordering,
        other => panic!("`{other}` is not a capability the suite knows: {LACKABLE:?}"),
    };
    let mut declared: Vec<&str> = lacks.to_vec();
    declared.sort_unstable();
    let mut reported: Vec<&str> = LACKABLE.iter().copied().filter(|c| !has(c)).collect();
    reported.sort_unstable();
    assert_eq!(
        declared, reported,
        "`lacks` must name what {} reports it lacks",
        broker.broker
    );
}

/// Calls `$then! { every scenario, in order }`: the one list of scenario names the suite macro
/// and [`SCENARIOS`] are made from.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_scenarios {
    ($then:ident) => {
        $then! {
            round_trip_preserves_attributes,
            topic_isolation,
            competing_consumers,
            fan_out_to_groups,
            order_per_key,
            ack_removes_nack_redelivers,
            in_process_retry_then_success,
            delayed_redelivery_honoured,
            poison_message_dead_lettered_after_n_attempts,
            permanent_error_dead_lettered_at_once,
            unacked_redelivered_after_consumer_dies,
            resume_after_close_without_loss,
            concurrent_publishers_without_loss,
            large_message_round_trips,
            oversized_message_refused,
            duplicate_publish_absorbed_by_dedup,
            scheduled_delivery,
            graceful_shutdown_drains_in_flight,
            batch_publish,
            dead_letters_redrive_and_purge,
            broker_restart_without_loss,
            handler_panic_dead_lettered_after_n_attempts,
            failed_settlement_neither_loses_nor_freezes,
            redrive_reaches_only_the_group_that_failed,
            connection_cut_redelivers_unsettled,
            scheduled_to_topic_without_group_not_dropped
        }
    };
}

/// Generates the conformance tests of an adapter; see the [module docs](self).
#[macro_export]
macro_rules! conformance_suite {
    // Every scenario, except those the broker's missing capabilities rule out and those
    // skipped with a reason.
    (
        harness: $harness:ident,
        lacks: [$($lack:ident),* $(,)?],
        skip: [$($skip:ident : $reason:literal),* $(,)?] $(,)?
    ) => {
        // `$` is handed down so that the generated module can define a macro of its own.
        $crate::__conformance_lacks! {
            [$($lack),*] ($) $harness [$($lack),*] [$($skip : $reason),*]
        }
    };
    // Every scenario, except those skipped with a reason.
    (
        harness: $harness:ident,
        skip: [$($skip:ident : $reason:literal),* $(,)?] $(,)?
    ) => {
        $crate::__conformance_lacks! { [] ($) $harness [] [$($skip : $reason),*] }
    };
    // Only the listed scenarios: for a second test file that runs what needs a broker of its own.
    (
        harness: $harness:ident,
        only: [$($run:ident),* $(,)?] $(,)?
    ) => {
        mod conformance {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $run() {
                    $crate::conformance::$run(super::$harness().await).await;
                }
            )*
        }
    };
}

/// Turns each lacked capability into the skips of the scenarios that need it: the one place
/// that says which scenario needs what, and why it is skipped without it.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_lacks {
    ([] ($d:tt) $harness:ident [$($lack:ident),*] [$($skip:ident : $reason:literal),*]) => {
        $crate::__conformance_every_scenario! { ($d) $harness [$($lack),*] [$($skip : $reason),*] }
    };
    ([survives_broker_restart $(, $rest:ident)*] ($d:tt) $harness:ident [$($lack:ident),*] [$($skip:ident : $reason:literal),*]) => {
        $crate::__conformance_lacks! { [$($rest),*] ($d) $harness [$($lack),*] [$($skip : $reason,)*
            broker_restart_without_loss: "the broker keeps no messages across a restart (it lacks survives_broker_restart)"] }
    };
    ([remote $(, $rest:ident)*] ($d:tt) $harness:ident [$($lack:ident),*] [$($skip:ident : $reason:literal),*]) => {
        $crate::__conformance_lacks! { [$($rest),*] ($d) $harness [$($lack),*] [$($skip : $reason,)*
            connection_cut_redelivers_unsettled: "the broker runs in process: there is no connection to cut (it lacks remote)"] }
    };
    ([scheduling $(, $rest:ident)*] ($d:tt) $harness:ident [$($lack:ident),*] [$($skip:ident : $reason:literal),*]) => {
        $crate::__conformance_lacks! { [$($rest),*] ($d) $harness [$($lack),*] [$($skip : $reason,)*
            scheduled_delivery: "the broker cannot schedule (it lacks scheduling)",
            scheduled_to_topic_without_group_not_dropped: "the broker cannot schedule (it lacks scheduling)"] }
    };
    ([per_key_ordering $(, $rest:ident)*] ($d:tt) $harness:ident [$($lack:ident),*] [$($skip:ident : $reason:literal),*]) => {
        $crate::__conformance_lacks! { [$($rest),*] ($d) $harness [$($lack),*] [$($skip : $reason,)*
            order_per_key: "the broker cannot keep per-key order (it lacks per_key_ordering)"] }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_every_scenario {
    (($d:tt) $harness:ident [$($lack:ident),*] [$($skip:ident : $reason:literal),*]) => {
        mod conformance {
            // One test per scenario: skipped ones match their own arm first and are ignored.
            macro_rules! scenario_test {
                $(
                    ($skip) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        #[ignore = $reason]
                        async fn $skip() {
                            $crate::conformance::$skip(super::$harness().await).await;
                        }
                    };
                )*
                ($d name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $d name() {
                        $crate::conformance::$d name(super::$harness().await).await;
                    }
                };
            }
            macro_rules! scenario_tests {
                ($d($d name:ident),*) => { $d(scenario_test!($d name);)* };
            }
            $crate::__conformance_scenarios!(scenario_tests);

            #[test]
            fn every_skip_names_a_scenario() {
                $crate::conformance::assert_known(&[$(stringify!($skip)),*]);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lacks_names_what_the_broker_lacks() {
                $crate::conformance::assert_lacks(
                    &super::$harness().await.broker,
                    &[$(stringify!($lack)),*],
                );
            }
        }
    };
}

/// Fails when `names` holds something that is not a scenario of [`SCENARIOS`], or a name twice.
pub fn assert_known(names: &[&str]) {
    let unknown: Vec<_> = names.iter().filter(|n| !SCENARIOS.contains(n)).collect();
    assert!(unknown.is_empty(), "not conformance scenarios: {unknown:?}");
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "a scenario is listed twice");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_distinct_and_known() {
        assert_known(SCENARIOS);
        assert!(SCENARIOS.contains(&"broker_restart_without_loss"));
        let result = std::panic::catch_unwind(|| assert_known(&["no_such_scenario"]));
        assert!(result.is_err(), "an unknown name must be refused");
    }
}
