//! The scenarios, by theme. Each takes a fresh [`Harness`](super::Harness) and panics when the
//! adapter misbehaves.

mod common;
mod delivery;
mod failure;
mod lifecycle;
mod scheduling;

pub use delivery::*;
pub use failure::*;
pub use lifecycle::*;
pub use scheduling::*;

/// Every scenario, by name. Adapters run each or skip it with a reason.
pub const SCENARIOS: &[&str] = {
    macro_rules! names {
        ($($name:ident),*) => { &[$(stringify!($name)),*] };
    }
    crate::__conformance_scenarios!(names)
};
