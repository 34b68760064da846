use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::handler::{HandlerError, Incoming};

/// A tracing span per attempt and the handler metrics:
/// `busway_handled_total{topic,group,outcome}` and `busway_handler_duration_seconds{topic,group}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
}

impl<S> Service<Incoming> for Observe<S>
where
    S: Service<Incoming, Response = (), Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<'static, Result<(), HandlerError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        let span = tracing::info_span!(
            "busway.handle",
            topic = %req.info.topic,
            group = %req.info.group,
            message.id = req.message.id(),
            message.type = req.message.ty(),
            attempt = req.info.attempt,
            traceparent = req.message.extension(crate::message::TRACEPARENT),
        );
        let topic = req.info.topic.clone();
        let group = req.info.group.clone();
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let started = Instant::now();
                let result = fut.await;
                let outcome = match &result {
                    Ok(()) => "ok",
                    Err(e) if e.is_transient() => "transient_error",
                    Err(_) => "permanent_error",
                };
                if let Err(e) = &result {
                    tracing::info!(error = %e, outcome, "handler failed");
                }
                metrics::histogram!("busway_handler_duration_seconds", "topic" => topic.clone(), "group" => group.clone())
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("busway_handled_total", "topic" => topic, "group" => group, "outcome" => outcome)
                    .increment(1);
                result
            }
            .instrument(span),
        )
    }
}
