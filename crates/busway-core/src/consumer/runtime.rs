//! The dispatch loop behind [`ConsumerHandle`](super::ConsumerHandle).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use super::lanes::{LaneTicket, Lanes};
use super::settle::{AlertHook, dead_letter, decide, settle};
use super::supervise::{Pause, Spec, interrupted};
use super::{ConsumerHealth, ConsumerReport, Stats};
use crate::broker::{Ordering, Subscription};
use crate::dead_letter::DeadLetterReason;
use crate::delivery::{Delivery, DeliveryInfo, Settle, Settlement};
use crate::error::{Error, ErrorKind, Result};
use crate::handler::{HandlerError, Incoming};
use crate::message::Message;
use crate::middleware::{PanicSite, caught};
use crate::policy::RedeliveryPolicy;

pub(crate) struct Settings {
    pub(crate) redelivery: RedeliveryPolicy,
    pub(crate) alert: Option<AlertHook>,
    pub(crate) auto_ack: bool,
    pub(crate) ordering: Ordering,
    pub(crate) concurrency: usize,
    pub(crate) drain_timeout: Duration,
}

pub(crate) struct Runtime {
    pub(crate) spec: Arc<Spec>,
    pub(crate) subscription: Box<dyn Subscription>,
    pub(crate) service: BoxCloneService<Incoming, (), HandlerError>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) health: watch::Sender<ConsumerHealth>,
}

/// Everything one spawned task needs to see a delivery through.
struct Job {
    message: Message,
    info: Arc<DeliveryInfo>,
    settle: Box<dyn Settle>,
    /// The handler stack's future, or why the delivery is undecodable (no handler runs).
    work: std::result::Result<BoxFuture<'static, Result<(), HandlerError>>, String>,
    lane: Option<LaneTicket>,
    _permit: OwnedSemaphorePermit,
}

/// Why the pull loop ended.
enum Exit {
    /// Shutdown was asked for (or the handle dropped).
    Stopped,
    /// The subscription could not be restored.
    Failed(Error),
}

impl Runtime {
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<ConsumerReport> {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut tasks = JoinSet::new();
        let mut lanes = Lanes::default();
        // A dropped handle counts as a stop request too.
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        let mut not_ready = Pause::new();
        let mut pull_errors = Pause::new();

        let exit = loop {
            let permit = tokio::select! {
                biased;
                () = &mut stopped => break Exit::Stopped,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break Exit::Stopped,
                },
            };
            // Waits here while the circuit breaker is open: nothing more is pulled.
            let ready = tokio::select! {
                biased;
                () = &mut stopped => break Exit::Stopped,
                r = AssertUnwindSafe(self.service.ready()).catch_unwind() => match r {
                    Ok(r) => r.map(|_| ()),
                    Err(payload) => Err(caught(payload.as_ref(), None)),
                },
            };
            if let Err(e) = ready {
                let wait = not_ready.next();
                tracing::error!(error = %e, retry_in = ?wait, "the handler stack is not ready");
                tokio::select! {
                    biased;
                    () = &mut stopped => break Exit::Stopped,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
            not_ready.reset();
            let next = tokio::select! {
                biased;
                () = &mut stopped => break Exit::Stopped,
                n = self.subscription.next() => n,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) if e.is_transient() && e.kind() != ErrorKind::Closed => {
                    // The adapter is restoring its connection; it goes on by itself.
                    let wait = pull_errors.next();
                    tracing::warn!(error = %e, retry_in = ?wait, "subscription error; continuing");
                    tokio::select! {
                        biased;
                        () = &mut stopped => break Exit::Stopped,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
                // The subscription ended without being asked to, or failed for good: say so
                // and subscribe again.
                other => {
                    let cause = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "the subscription ended".to_owned(),
                    };
                    interrupted(&self.spec, &self.stats, &cause);
                    if let Err(e) = self.subscription.close().await {
                        tracing::debug!(error = %e, "closing the interrupted subscription failed");
                    }
                    match resubscribe(&self.spec, &self.health, cause, &mut stopped).await {
                        Ok(Some(fresh)) => self.subscription = fresh,
                        Ok(None) => break Exit::Stopped,
                        Err(e) => break Exit::Failed(e),
                    }
                    continue;
                }
            };
            pull_errors.reset();
            let job = self.prepare(delivery, permit, &mut lanes);
            tasks.spawn(process(job, self.settings.clone(), self.stats.clone()));
            while tasks.try_join_next().is_some() {}
        };

        if let Err(e) = self.subscription.close().await {
            tracing::warn!(error = %e, "closing the subscription failed");
        }
        let in_flight = tasks.len();
        let drained = tokio::time::timeout(self.settings.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        let abandoned = if drained.is_err() {
            let left = tasks.len() as u64;
            tracing::warn!(
                left,
                in_flight,
                "drain deadline passed; giving unfinished deliveries back to the broker"
            );
            // Aborting drops their settlement handles, which release them to the broker.
            tasks.shutdown().await;
            left
        } else {
            0
        };
        match exit {
            Exit::Stopped => {
                self.health
                    .send_replace(ConsumerHealth::Stopped { error: None });
                Ok(ConsumerReport {
                    stats: self.stats.snapshot(),
                    abandoned,
                })
            }
            Exit::Failed(e) => {
                self.health.send_replace(ConsumerHealth::Stopped {
                    error: Some(e.to_string()),
                });
                Err(e)
            }
        }
    }

    fn prepare(
        &mut self,
        delivery: Delivery,
        permit: OwnedSemaphorePermit,
        lanes: &mut Lanes,
    ) -> Job {
        Stats::bump(&self.stats.received);
        let decode_error = delivery.decode_error().map(str::to_owned);
        let (message, info, settle) = delivery.into_parts();
        let info = Arc::new(info);
        let work = match decode_error {
            Some(reason) => Err(reason),
            None => Ok({
                let incoming = Incoming::new(message.clone(), info.clone());
                // The stack's `call` runs on this loop's task: a panic in a layer must not end it.
                let site = PanicSite::of(&incoming);
                match std::panic::catch_unwind(AssertUnwindSafe(|| self.service.call(incoming))) {
                    Ok(fut) => async move {
                        // A panic in a layer's future (the handler's own is caught closer to it).
                        match AssertUnwindSafe(fut).catch_unwind().await {
                            Ok(result) => result,
                            Err(payload) => Err(caught(payload.as_ref(), Some(&site))),
                        }
                    }
                    .boxed(),
                    Err(payload) => {
                        std::future::ready(Err(caught(payload.as_ref(), Some(&site)))).boxed()
                    }
                }
            }),
        };
        let key = match (&info.ordering_key, self.settings.ordering) {
            (Some(key), _) => Some(key.as_str()),
            (None, Ordering::PerKey) => message.partition_key(),
            (None, Ordering::Unordered) => None,
        };
        let lane = key.map(|k| lanes.enter(k));
        Job {
            message,
            info,
            settle,
            work,
            lane,
            _permit: permit,
        }
    }
}

async fn process(mut job: Job, settings: Arc<Settings>, stats: Arc<Stats>) {
    if let Some(previous) = job.lane.as_mut().and_then(|l| l.previous.take()) {
        // Err means the previous job ended (its sender dropped): either way it is done.
        let _ = previous.await;
    }
    let settlement = match job.work {
        Ok(work) if settings.auto_ack => {
            // At-most-once: the handler runs only once the broker has forgotten the message.
            if settle(
                job.settle,
                Settlement::Ack,
                &job.message,
                &job.info,
                &settings,
                &stats,
            )
            .await
                && let Err(e) = work.await
            {
                tracing::warn!(error = %e, message.id = job.message.id(), "auto-acked message failed");
            }
            return;
        }
        Ok(work) => decide(work.await, &job.info, &settings.redelivery),
        Err(reason) => dead_letter(&job.info, DeadLetterReason::Undecodable, &reason),
    };
    settle(
        job.settle,
        settlement,
        &job.message,
        &job.info,
        &settings,
        &stats,
    )
    .await;
    // `job.lane` drops here, releasing the next delivery with the same key.
}

/// Subscribes again with backoff until it works (`Some`), shutdown is asked for (`None`), or
/// the broker refuses in a way waiting cannot fix (`Err`: bad credentials, configuration).
async fn resubscribe(
    spec: &Spec,
    health: &watch::Sender<ConsumerHealth>,
    cause: String,
    stopped: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<Box<dyn Subscription>>> {
    let mut pause = Pause::new();
    let mut attempts = 0u32;
    let mut last = cause;
    loop {
        attempts += 1;
        health.send_replace(ConsumerHealth::Recovering {
            error: last.clone(),
            attempts,
        });
        let wait = pause.next();
        tokio::select! {
            biased;
            () = stopped.as_mut() => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
        let subscribed = tokio::select! {
            biased;
            () = stopped.as_mut() => return Ok(None),
            s = spec.subscribe() => s,
        };
        match subscribed {
            Ok(subscription) => {
                tracing::info!(topic = %spec.topic, group = %spec.group, attempts, "subscribed again");
                health.send_replace(ConsumerHealth::Running);
                return Ok(Some(subscription));
            }
            Err(e) if e.is_transient() || e.kind() == ErrorKind::Closed => {
                tracing::error!(error = %e, topic = %spec.topic, group = %spec.group, attempts, "subscribing again failed; retrying");
                last = e.to_string();
            }
            Err(e) => {
                tracing::error!(error = %e, topic = %spec.topic, group = %spec.group, "subscribing again failed for good; the consumer stops");
                return Err(e);
            }
        }
    }
}
