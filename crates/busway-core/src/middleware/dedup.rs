use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::handler::{HandlerError, Incoming};
use crate::idempotency::{Claim, IdempotencyStore};

/// Runs a message's handler at most once per group, keyed by CloudEvents `source` + `id` (which
/// the specification makes unique together).
///
/// A message already processed is acknowledged without running the handler. One being processed
/// elsewhere right now fails transiently, so it is retried after the other finishes.
#[derive(Clone)]
pub struct DedupLayer {
    store: Arc<dyn IdempotencyStore>,
}

impl DedupLayer {
    /// Records processed ids in `store`.
    pub fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for DedupLayer {
    type Service = Dedup<S>;
    fn layer(&self, inner: S) -> Dedup<S> {
        Dedup {
            inner,
            store: self.store.clone(),
        }
    }
}

/// The service made by [`DedupLayer`].
#[derive(Clone)]
pub struct Dedup<S> {
    inner: S,
    store: Arc<dyn IdempotencyStore>,
}

fn dedup_key(req: &Incoming) -> String {
    // Unit separator: cannot appear in a URI-reference, so keys cannot collide.
    format!("{}\u{1f}{}", req.message.source(), req.message.id())
}

impl<S> Service<Incoming> for Dedup<S>
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
        let store = self.store.clone();
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let group = req.info.group.clone();
            let key = dedup_key(&req);
            match store.begin(&group, &key).await? {
                Claim::AlreadyDone => {
                    metrics::counter!("busway_duplicates_total", "group" => group.clone())
                        .increment(1);
                    tracing::debug!(id = req.message.id(), "duplicate message skipped");
                    return Ok(());
                }
                Claim::InProgress => {
                    return Err(HandlerError::transient(format!(
                        "message {} is being processed by another consumer",
                        req.message.id()
                    )));
                }
                Claim::Acquired => {}
            }
            let result = inner.call(req).await;
            // The handler's outcome stands whatever the store says afterwards: turning a done
            // side effect into a failure would only make it run again. A claim the store could
            // not update expires with its lease.
            let (update, outcome) = match &result {
                Ok(()) => (store.complete(&group, &key).await, "complete"),
                Err(_) => (store.abandon(&group, &key).await, "abandon"),
            };
            if let Err(e) = update {
                metrics::counter!("busway_idempotency_store_failures_total", "group" => group.clone(), "operation" => outcome)
                    .increment(1);
                tracing::error!(
                    error = %e,
                    %group,
                    key,
                    operation = outcome,
                    "the idempotency store failed after the handler ran; its claim stays until the lease expires"
                );
            }
            result
        })
    }
}
