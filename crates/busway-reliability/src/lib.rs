//! # busway-reliability
//!
//! Fault runs against real processes and real brokers, counting what was lost and what was
//! duplicated. A run starts a producer process and a consumer process (this crate's binary, on
//! the broker [`busway::BusConfig`] selects from the environment), injects one fault while
//! messages flow, and compares two ledgers:
//!
//! - the producer appends a message's number once the broker confirmed it;
//! - the consumer's handler appends it before the delivery is acknowledged.
//!
//! A confirmed number missing from the consumer's ledger was lost; a number there more than once
//! was delivered again after its effect (at-least-once: the dedup middleware or a transactional
//! inbox absorbs those). Faults: the consumer process killed with SIGKILL at random points and
//! restarted, the broker restarted (a command the caller gives), the client connections cut (a
//! TCP proxy between the processes and the broker), and handlers that panic.

pub mod consume;
pub mod ledger;
pub mod produce;
pub mod run;

/// What can go wrong in a run itself (not in the system under test).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A ledger could not be read or written.
    #[error("ledger {path}: {source}")]
    Ledger {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A child process could not be started or stopped.
    #[error("{what}: {source}")]
    Process {
        /// Which process and what was done to it.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The broker or the bus failed in a way the run cannot go on from.
    #[error(transparent)]
    Bus(#[from] busway::Error),
    /// The run did not finish in time.
    #[error("{0}")]
    Stalled(String),
}
