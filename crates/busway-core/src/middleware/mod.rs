//! Tower layers around a handler. The consumer runtime stacks them in a fixed, sensible order
//! (observe → circuit breaker → dedup → retry → timeout → handler); each is also usable alone.

mod circuit_breaker;
mod dedup;
mod observe;
mod retry;
mod timeout;

pub use circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakerService,
    CircuitPermit, CircuitState,
};
pub use dedup::{Dedup, DedupLayer};
pub use observe::{Observe, ObserveLayer};
pub use retry::{Retry, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};
