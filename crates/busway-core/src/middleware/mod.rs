//! Tower layers around a handler. The consumer runtime stacks them in a fixed, sensible order
//! (observe → circuit breaker → dedup → retry → timeout → catch panic → handler); each is also
//! usable alone.

mod catch_panic;
mod circuit_breaker;
mod dedup;
mod observe;
mod retry;
mod timeout;

pub use catch_panic::{CatchPanic, CatchPanicLayer};
pub(crate) use catch_panic::{PanicSite, caught};
pub use circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakerService,
    CircuitPermit, CircuitState,
};
pub use dedup::{Dedup, DedupLayer};
pub use observe::{Observe, ObserveLayer};
pub use retry::{Retry, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};
