use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::handler::{HandlerError, Incoming};

/// When the breaker opens and how long it stays open.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CircuitBreakerConfig {
    /// Consecutive transient failures (after in-process retries) that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe is let through.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Deliveries flow.
    Closed,
    /// No new delivery is taken until the cool-down ends.
    Open,
    /// One probe delivery is being tried; its outcome closes or re-opens the circuit.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Shared {
    config: CircuitBreakerConfig,
    state: Mutex<State>,
    changed: Notify,
}

/// A circuit breaker shared by every attempt of a consumer.
///
/// Permanent failures (bad messages) do not count: they say nothing about the health of what the
/// handler depends on. While open, [`CircuitBreaker::admit`] waits, so the consumer runtime stops
/// pulling deliveries from the broker.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

/// Admission to run one attempt; its outcome must be recorded.
#[derive(Debug)]
#[must_use]
pub struct CircuitPermit {
    breaker: CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::Closed {
                    consecutive_failures: 0,
                }),
                changed: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state (an open circuit past its cool-down reports half-open).
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if Instant::now() < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Admits at once when the circuit is closed, without waiting or allocating; `None` otherwise.
    pub fn try_admit(&self) -> Option<CircuitPermit> {
        matches!(*self.lock(), State::Closed { .. }).then(|| self.permit(false))
    }

    /// Waits until an attempt may run: at once when closed; after the cool-down, as the single
    /// probe, when open.
    pub async fn admit(&self) -> CircuitPermit {
        loop {
            let wait_until = {
                let mut state = self.lock();
                match *state {
                    State::Closed { .. } => return self.permit(false),
                    State::Open { until } if Instant::now() >= until => {
                        *state = State::HalfOpen { probing: true };
                        gauge(CircuitState::HalfOpen);
                        tracing::info!("circuit half-open: letting one probe through");
                        return self.permit(true);
                    }
                    State::HalfOpen { probing: false } => {
                        *state = State::HalfOpen { probing: true };
                        return self.permit(true);
                    }
                    State::Open { until } => Some(until),
                    State::HalfOpen { probing: true } => None,
                }
            };
            let changed = self.shared.changed.notified();
            match wait_until {
                Some(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    fn permit(&self, probe: bool) -> CircuitPermit {
        CircuitPermit {
            breaker: self.clone(),
            probe,
            recorded: false,
        }
    }

    fn transition(&self, state: &mut State, next: State) {
        let label = match next {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        };
        *state = next;
        gauge(label);
        self.shared.changed.notify_waiters();
    }
}

fn gauge(state: CircuitState) {
    let value = match state {
        CircuitState::Closed => 0.0,
        CircuitState::HalfOpen => 1.0,
        CircuitState::Open => 2.0,
    };
    metrics::gauge!("busway_circuit_state").set(value);
}

impl CircuitPermit {
    /// Records the attempt's outcome; transient failures count toward opening.
    pub fn record(mut self, result: &Result<(), HandlerError>) {
        self.recorded = true;
        let failed = matches!(result, Err(e) if e.is_transient());
        let breaker = self.breaker.clone();
        let config = &breaker.shared.config;
        let mut state = breaker.lock();
        let open = || State::Open {
            until: Instant::now() + config.cool_down,
        };
        match (&mut *state, self.probe) {
            (State::HalfOpen { .. }, true) if failed => {
                tracing::warn!(cool_down = ?config.cool_down, "probe failed: circuit open again");
                breaker.transition(&mut state, open());
            }
            (State::HalfOpen { .. }, true) => {
                tracing::info!("probe succeeded: circuit closed");
                breaker.transition(
                    &mut state,
                    State::Closed {
                        consecutive_failures: 0,
                    },
                );
            }
            (
                State::Closed {
                    consecutive_failures,
                },
                false,
            ) if failed => {
                *consecutive_failures += 1;
                if *consecutive_failures >= config.failure_threshold {
                    tracing::warn!(
                        failures = *consecutive_failures,
                        cool_down = ?config.cool_down,
                        "circuit open: pausing consumption"
                    );
                    breaker.transition(&mut state, open());
                }
            }
            (
                State::Closed {
                    consecutive_failures,
                },
                false,
            ) => *consecutive_failures = 0,
            // Stragglers admitted before the circuit opened say nothing new.
            _ => {}
        }
    }
}

impl Drop for CircuitPermit {
    fn drop(&mut self) {
        // A probe admitted but never run must not leave the breaker waiting for it forever.
        if self.probe && !self.recorded {
            let breaker = self.breaker.clone();
            let mut state = breaker.lock();
            if let State::HalfOpen { probing: true } = *state {
                breaker.transition(&mut state, State::HalfOpen { probing: false });
            }
        }
    }
}

/// Puts a [`CircuitBreaker`] in front of a handler: `poll_ready` waits while the circuit is open.
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    breaker: CircuitBreaker,
}

impl CircuitBreakerLayer {
    /// Uses `breaker` (clone it first to watch its state).
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;
    fn layer(&self, inner: S) -> CircuitBreakerService<S> {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            admitting: None,
            permit: None,
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: CircuitBreaker,
    admitting: Option<Pin<Box<dyn Future<Output = CircuitPermit> + Send>>>,
    permit: Option<CircuitPermit>,
}

impl<S: Clone> Clone for CircuitBreakerService<S> {
    fn clone(&self) -> Self {
        // A clone has not been made ready: it holds no permit.
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            admitting: None,
            permit: None,
        }
    }
}

impl<S> Service<Incoming> for CircuitBreakerService<S>
where
    S: Service<Incoming, Response = (), Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        if self.permit.is_none() && self.admitting.is_none() {
            // The common case, a closed circuit, needs no future.
            self.permit = self.breaker.try_admit();
        }
        if self.permit.is_none() {
            let breaker = self.breaker.clone();
            let admitting = self
                .admitting
                .get_or_insert_with(|| Box::pin(async move { breaker.admit().await }));
            let permit = ready!(admitting.as_mut().poll(cx));
            self.admitting = None;
            self.permit = Some(permit);
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        // Called without poll_ready (a contract breach): admit as a plain, unprobed attempt.
        let permit = self
            .permit
            .take()
            .unwrap_or_else(|| self.breaker.permit(false));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            permit.record(&result);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Result<(), HandlerError> {
        Err(HandlerError::transient("down"))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_probes_after_cool_down() {
        let breaker = CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_secs(10),
        });
        for _ in 0..2 {
            breaker.admit().await.record(&failure());
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.admit().await.record(&failure());
        assert_eq!(breaker.state(), CircuitState::Open);

        let opened = Instant::now();
        let probe = breaker.admit().await;
        assert_eq!(opened.elapsed(), Duration::from_secs(10));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);

        // While the probe runs nobody else is admitted.
        let blocked = tokio::time::timeout(Duration::from_secs(60), breaker.admit()).await;
        assert!(blocked.is_err());

        probe.record(&failure());
        assert_eq!(breaker.state(), CircuitState::Open);
        let probe = breaker.admit().await;
        assert_eq!(opened.elapsed(), Duration::from_secs(80));
        probe.record(&Ok(()));
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_and_successes_do_not_open() {
        let breaker = CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(10),
        });
        breaker.admit().await.record(&failure());
        breaker.admit().await.record(&Ok(()));
        breaker.admit().await.record(&failure());
        breaker
            .admit()
            .await
            .record(&Err(HandlerError::permanent("bad input")));
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_probe_frees_the_half_open_slot() {
        let breaker = CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 1,
            cool_down: Duration::from_secs(1),
        });
        breaker.admit().await.record(&failure());
        let probe = breaker.admit().await;
        drop(probe);
        let next = tokio::time::timeout(Duration::from_millis(1), breaker.admit()).await;
        assert!(
            next.is_ok(),
            "a dropped probe must let the next one through"
        );
    }
}
