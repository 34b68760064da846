//! The dispatch loop behind [`ConsumerHandle`](super::ConsumerHandle).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use super::lanes::{LaneTicket, Lanes};
use super::settle::{AlertHook, announce_dead_letter, dead_letter, decide};
use super::{ConsumerReport, Stats};
use crate::broker::{Ordering, Subscription};
use crate::dead_letter::DeadLetterReason;
use crate::delivery::{Delivery, DeliveryInfo, Settle, Settlement};
use crate::error::{ErrorKind, Result};
use crate::handler::{HandlerError, Incoming};
use crate::message::Message;
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
    pub(crate) subscription: Box<dyn Subscription>,
    pub(crate) service: BoxCloneService<Incoming, (), HandlerError>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) settings: Arc<Settings>,
}

/// Everything one spawned task needs to see a delivery through.
struct Job {
    message: Message,
    info: Arc<DeliveryInfo>,
    settle: Box<dyn Settle>,
    /// The handler stack's future; `None` when the delivery is undecodable.
    work: Option<BoxFuture<'static, Result<(), HandlerError>>>,
    lane: Option<LaneTicket>,
    _permit: OwnedSemaphorePermit,
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

        loop {
            let permit = tokio::select! {
                biased;
                () = &mut stopped => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            // Waits here while the circuit breaker is open: nothing more is pulled.
            let ready = tokio::select! {
                biased;
                () = &mut stopped => break,
                r = self.service.ready() => r.map(|_| ()),
            };
            if let Err(e) = ready {
                tracing::error!(error = %e, "handler stack is not ready");
                continue;
            }
            let next = tokio::select! {
                biased;
                () = &mut stopped => break,
                n = self.subscription.next() => n,
            };
            let delivery = match next {
                None => {
                    tracing::info!("subscription ended");
                    break;
                }
                Some(Err(e)) if e.kind() == ErrorKind::Closed => {
                    tracing::warn!(error = %e, "subscription closed");
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "subscription error; continuing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Some(Ok(d)) => d,
            };
            let job = self.prepare(delivery, permit, &mut lanes);
            tasks.spawn(process(job, self.settings.clone(), self.stats.clone()));
            while tasks.try_join_next().is_some() {}
        }

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
        Ok(ConsumerReport {
            stats: self.stats.snapshot(),
            abandoned,
        })
    }

    fn prepare(
        &mut self,
        delivery: Delivery,
        permit: OwnedSemaphorePermit,
        lanes: &mut Lanes,
    ) -> Job {
        Stats::bump(&self.stats.received);
        let (message, info, settle) = delivery.into_parts();
        let info = Arc::new(info);
        let work = info.decode_error.is_none().then(|| {
            self.service.call(Incoming {
                message: message.clone(),
                info: info.clone(),
            })
        });
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
    let settlement = match (job.work, &job.info.decode_error) {
        (Some(work), _) if settings.auto_ack => {
            settle(job.settle, Settlement::Ack, &job.message, &settings, &stats).await;
            if let Err(e) = work.await {
                tracing::warn!(error = %e, message.id = job.message.id(), "auto-acked message failed");
            }
            return;
        }
        (Some(work), _) => decide(work.await, &job.info, &settings.redelivery),
        (None, Some(reason)) => dead_letter(&job.info, DeadLetterReason::Undecodable, reason),
        (None, None) => dead_letter(&job.info, DeadLetterReason::Undecodable, "no handler ran"),
    };
    settle(job.settle, settlement, &job.message, &settings, &stats).await;
    // `job.lane` drops here, releasing the next delivery with the same key.
}

async fn settle(
    handle: Box<dyn Settle>,
    settlement: Settlement,
    message: &Message,
    settings: &Settings,
    stats: &Stats,
) {
    let counter = match &settlement {
        Settlement::Ack => &stats.acked,
        Settlement::Redeliver { .. } => &stats.redelivered,
        Settlement::DeadLetter(meta) => {
            announce_dead_letter(message, meta, settings.alert.as_ref());
            &stats.dead_lettered
        }
    };
    match handle.settle(settlement).await {
        Ok(()) => Stats::bump(counter),
        Err(e) => {
            Stats::bump(&stats.settle_failures);
            tracing::error!(error = %e, message.id = message.id(), "settlement failed; the broker will redeliver");
        }
    }
}
