use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backon::{BackoffBuilder, Retryable};
use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::handler::{HandlerError, Incoming};
use crate::policy::RetryPolicy;

/// Retries transient failures in process, per a [`RetryPolicy`]; permanent failures pass at once.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    policy: Arc<RetryPolicy>,
}

impl RetryLayer {
    /// Retries per `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
}

/// Adapts a policy to backon's builder, which drives the waits.
struct PolicyBackoff(Arc<RetryPolicy>);

impl BackoffBuilder for PolicyBackoff {
    type Backoff = Box<dyn Iterator<Item = Duration> + Send + Sync + Unpin>;
    fn build(self) -> Self::Backoff {
        let retries = self.0.max_attempts.saturating_sub(1) as usize;
        self.0.backoff.delays(retries, self.0.max_elapsed)
    }
}

impl<S> Service<Incoming> for Retry<S>
where
    S: Service<Incoming, Response = (), Error = HandlerError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        let policy = self.policy.clone();
        // The first attempt uses the instance already made ready; retries get fresh clones.
        let ready = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, ready);
        let mut first = Some(ready);
        let template = self.inner.clone();
        Box::pin(async move {
            let started = Instant::now();
            let max_elapsed = policy.max_elapsed;
            let attempt = move || {
                let taken = first.take();
                let template = template.clone();
                let req = req.clone();
                async move {
                    match taken {
                        Some(mut svc) => svc.call(req).await,
                        None => template.oneshot(req).await,
                    }
                }
            };
            attempt
                .retry(PolicyBackoff(policy))
                .sleep(tokio::time::sleep)
                .when(|e: &HandlerError| {
                    e.is_transient() && max_elapsed.is_none_or(|max| started.elapsed() < max)
                })
                .notify(|e: &HandlerError, wait: Duration| {
                    metrics::counter!("busway_retries_total").increment(1);
                    tracing::debug!(error = %e, ?wait, "handler failed transiently; retrying in process");
                })
                .await
        })
    }
}
