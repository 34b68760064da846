use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::delivery::DeliveryInfo;
use crate::handler::{HandlerError, Incoming};

/// Turns a panic in the handler into a failed attempt ([`HandlerError::panicked`]).
///
/// A panic is a bug, not a verdict on the message, but it must not cost the message: caught
/// here, it is retried per policy like a transient failure and dead-lettered with reason
/// `handler_panicked` after the last attempt. Innermost in the runtime's stack, so retry, dedup
/// (which releases its claim) and the circuit breaker all see a plain failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// The service made by [`CatchPanicLayer`].
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

/// Which delivery a panic happened in, for the log.
pub(crate) struct PanicSite {
    pub(crate) info: Arc<DeliveryInfo>,
    pub(crate) message_id: String,
}

impl PanicSite {
    pub(crate) fn of(req: &Incoming) -> Self {
        Self {
            info: req.info.clone(),
            message_id: req.message.id().to_owned(),
        }
    }
}

/// Records a caught panic and makes it a failed attempt.
pub(crate) fn caught(
    payload: &(dyn std::any::Any + Send),
    site: Option<&PanicSite>,
) -> HandlerError {
    let text = HandlerError::panic_message(payload);
    match site {
        Some(site) => {
            metrics::counter!(
                "busway_handler_panics_total",
                "topic" => site.info.topic.clone(),
                "group" => site.info.group.clone(),
            )
            .increment(1);
            tracing::error!(
                message.id = %site.message_id,
                topic = %site.info.topic,
                group = %site.info.group,
                attempt = site.info.attempt,
                panic = %text,
                "handler panicked; counting it as a failed attempt"
            );
        }
        None => {
            metrics::counter!("busway_handler_panics_total").increment(1);
            tracing::error!(panic = %text, "handler panicked while getting ready");
        }
    }
    HandlerError::panicked(text)
}

impl<S> Service<Incoming> for CatchPanic<S>
where
    S: Service<Incoming, Response = (), Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.poll_ready(cx)))
            .unwrap_or_else(|payload| Poll::Ready(Err(caught(payload.as_ref(), None))))
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        // The handler may panic before its future exists (a closure's synchronous part, an
        // extractor) or while it runs; both are caught.
        let site = PanicSite::of(&req);
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        match started {
            Ok(fut) => Box::pin(async move {
                match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(result) => result,
                    Err(payload) => Err(caught(payload.as_ref(), Some(&site))),
                }
            }),
            Err(payload) => {
                let error = caught(payload.as_ref(), Some(&site));
                Box::pin(std::future::ready(Err(error)))
            }
        }
    }
}
