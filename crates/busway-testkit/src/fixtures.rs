//! Broker fixtures.
