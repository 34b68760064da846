//! The task that owns one receive link: it receives, hands deliveries out, settles them, renews
//! their locks and, for delayed redeliveries, schedules the copies.
//!
//! The client settles a message only on the link that received it and needs `&mut` for every
//! operation, so a single task owns the link and delivery handles talk to it over a channel. A
//! receive is cancelled when a command arrives (receiving one message at a time is cancel-safe in
//! this client), so a settlement never waits for a receive to time out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azservicebus::ServiceBusReceivedMessage;
use azservicebus::receiver::DeadLetterOptions;
use busway_core::{DeadLetterMetadata, Delivery, DeliveryInfo, Error, Result};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::link::Link;
use super::settle::SbSettle;
use crate::codec;
use crate::error::classify;
use crate::senders::Senders;

/// See [`Pump::settle`].
const MIN_AGE_BEFORE_SETTLING: Duration = Duration::from_millis(5);

/// What a delivery handle asks of the pump.
pub(crate) enum Action {
    Ack,
    /// Give it back now (zero delay) or after `delay`.
    Redeliver {
        delay: Duration,
        first_failure: DateTime<Utc>,
    },
    DeadLetter(Box<DeadLetterMetadata>),
    /// The handle was dropped unsettled.
    Release,
}

pub(crate) struct Command {
    pub(crate) id: u64,
    pub(crate) action: Action,
    pub(crate) reply: Option<oneshot::Sender<Result<()>>>,
}

/// What every pump of one subscription shares.
pub(crate) struct Context {
    pub(crate) topic: String,
    pub(crate) group: String,
    /// Where copies for this group are sent: the topic, or the queue itself.
    pub(crate) send_entity: String,
    /// The entity receivers read: `<topic>/Subscriptions/<group>` or the queue.
    pub(crate) receive_entity: String,
    /// Whether a copy addressed to the group reaches only the group (its rules are in place, or
    /// it is a queue). When not, delayed redelivery keeps the lock for the delay instead.
    pub(crate) routed: bool,
    pub(crate) senders: Arc<Senders>,
    pub(crate) lock_renewal: Duration,
    pub(crate) max_message_bytes: usize,
}

/// A delivery handed out and not yet settled.
struct Held {
    message: ServiceBusReceivedMessage,
    received_at: Instant,
    attempt: u32,
    /// When to renew its lock next; `None` once renewal stopped.
    renew_at: Option<Instant>,
    /// Renewal stops after this.
    renew_until: Instant,
    /// Held back for a delayed redelivery without a copy: abandon at this time.
    release_at: Option<Instant>,
}

pub(crate) struct Pump<L: Link> {
    link: L,
    ctx: Arc<Context>,
    commands_tx: mpsc::UnboundedSender<Command>,
    commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::Sender<Result<Delivery>>,
    held: HashMap<u64, Held>,
    next_id: u64,
    /// Deliveries this link may have out at once (1 for sessions: strict order per key).
    max_in_flight: usize,
    /// How long one receive waits; a session link is released after this long without messages.
    receive_wait: Duration,
    /// Session links end when idle, so other sessions get their turn.
    ends_when_idle: bool,
    /// A receive was cancelled, so the link may still hold credit for one message.
    credit_out: bool,
}

/// Why a pump stopped.
pub(crate) enum Ended {
    /// The subscription closed and everything handed out was settled.
    Closed,
    /// A session link had nothing more to do.
    Idle,
    /// The link failed.
    Failed,
}

enum Event {
    Command(Option<Command>),
    Timer,
    Received(std::result::Result<Option<Box<ServiceBusReceivedMessage>>, azure_core::Error>),
    Closed,
}

impl<L: Link> Pump<L> {
    pub(crate) fn new(
        link: L,
        ctx: Arc<Context>,
        out: mpsc::Sender<Result<Delivery>>,
        max_in_flight: usize,
        receive_wait: Duration,
        ends_when_idle: bool,
    ) -> Self {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        Self {
            link,
            ctx,
            commands_tx,
            commands,
            out,
            held: HashMap::new(),
            next_id: 0,
            max_in_flight: max_in_flight.max(1),
            receive_wait,
            ends_when_idle,
            credit_out: false,
        }
    }

    /// Runs until the subscription is closed and every delivery settled (or, for a session,
    /// until it goes idle), then disposes the link.
    pub(crate) async fn run(mut self) -> Ended {
        let ended = self.pump().await;
        self.sweep().await;
        if let Err(e) = self.link.dispose().await {
            tracing::debug!(error = %e, entity = %self.ctx.receive_entity, "disposing a receiver");
        }
        ended
    }

    async fn pump(&mut self) -> Ended {
        let mut failures = 0u32;
        loop {
            let closing = self.out.is_closed();
            if closing && self.held.is_empty() {
                return Ended::Closed;
            }
            let timer = self.next_timer();
            let wants = !closing && self.held.len() < self.max_in_flight;
            // First wait for room in the hand-off channel, so nothing is received (and locked)
            // that no one will take.
            let permit = if wants {
                tokio::select! {
                    biased;
                    c = self.commands.recv() => { self.on_command(c).await; continue; }
                    () = sleep_until(timer) => { self.on_timers().await; continue; }
                    p = self.out.clone().reserve_owned() => match p {
                        Ok(p) => p,
                        Err(_) => continue,
                    },
                }
            } else {
                tokio::select! {
                    biased;
                    c = self.commands.recv() => self.on_command(c).await,
                    () = sleep_until(timer) => self.on_timers().await,
                    () = self.out.closed(), if !closing => {}
                }
                continue;
            };
            let event = tokio::select! {
                biased;
                c = self.commands.recv() => Event::Command(c),
                () = sleep_until(timer) => Event::Timer,
                () = self.out.closed() => Event::Closed,
                r = self.link.receive_one(self.receive_wait) => Event::Received(r.map(|m| m.map(Box::new))),
            };
            self.credit_out = !matches!(event, Event::Received(_));
            match event {
                Event::Command(c) => self.on_command(c).await,
                Event::Timer => self.on_timers().await,
                Event::Closed => {}
                Event::Received(Ok(Some(message))) => {
                    failures = 0;
                    let delivery = self.hand_out(*message);
                    permit.send(Ok(delivery));
                }
                Event::Received(Ok(None)) => {
                    if self.ends_when_idle && self.held.is_empty() {
                        return Ended::Idle;
                    }
                }
                Event::Received(Err(e)) => {
                    failures += 1;
                    let err = classify("receiving", &self.ctx.receive_entity, e);
                    if self.ends_when_idle {
                        tracing::debug!(error = %err, "session receive failed; releasing the session");
                        if self.held.is_empty() {
                            return Ended::Failed;
                        }
                    } else {
                        permit.send(Err(err));
                    }
                    let backoff = Duration::from_millis(200 * u64::from(failures.min(10)));
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    /// Registers a received message and wraps it into a delivery.
    fn hand_out(&mut self, message: ServiceBusReceivedMessage) -> Delivery {
        let id = self.next_id;
        self.next_id += 1;
        let decoded = codec::decode(message.raw_amqp_message());
        let broker_count = message.delivery_count().unwrap_or(1).max(1);
        // A scheduled copy starts the broker's count again; the attempt it carries continues it.
        let attempt = decoded
            .carried_attempt
            .map_or(broker_count, |carried| carried.max(1) + broker_count - 1);
        let now = Instant::now();
        let renew_at =
            (!self.ctx.lock_renewal.is_zero()).then(|| now + self.renew_interval(&message));
        self.held.insert(
            id,
            Held {
                message,
                received_at: now,
                attempt,
                renew_at,
                renew_until: now + self.ctx.lock_renewal,
                release_at: None,
            },
        );
        let info = DeliveryInfo {
            first_failure: decoded.first_failure,
            decode_error: decoded.error,
            ordering_key: self.link.session_id().map(str::to_owned),
            ..DeliveryInfo::new(&self.ctx.topic, &self.ctx.group, attempt)
        };
        let settle = SbSettle::new(id, self.commands_tx.clone());
        Delivery::new(decoded.message, info, Box::new(settle))
    }

    /// Half of what is left of the lock: early enough to survive a slow round trip.
    fn renew_interval(&self, message: &ServiceBusReceivedMessage) -> Duration {
        let until = self
            .link
            .session_locked_until()
            .or_else(|| message.locked_until());
        let left = until
            .map(|u| u - time::OffsetDateTime::now_utc())
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_secs(10));
        (left / 2).max(Duration::from_millis(100))
    }

    fn next_timer(&self) -> Option<Instant> {
        self.held
            .values()
            .flat_map(|h| [h.renew_at, h.release_at])
            .flatten()
            .min()
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.release_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(held) = self.held.remove(&id)
                && let Err(e) = self.link.abandon(&held.message, None).await
            {
                tracing::warn!(error = %e, "abandoning a delayed redelivery failed; its lock will expire");
            }
        }
        let renew: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.renew_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in renew {
            let Some(mut held) = self.held.remove(&id) else {
                continue;
            };
            if now >= held.renew_until {
                tracing::warn!(
                    entity = %self.ctx.receive_entity,
                    "lock renewal limit reached; the broker will redeliver this message when its lock expires"
                );
                held.renew_at = None;
            } else {
                match self.link.renew(&mut held.message).await {
                    Ok(()) => {
                        held.renew_at = Some(Instant::now() + self.renew_interval(&held.message));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, entity = %self.ctx.receive_entity, "renewing a lock failed");
                        held.renew_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
            self.held.insert(id, held);
        }
    }

    async fn on_command(&mut self, command: Option<Command>) {
        // The pump keeps a sender itself, so the channel never ends while it runs.
        let Some(Command { id, action, reply }) = command else {
            return;
        };
        let result = match self.held.remove(&id) {
            // Already given back (e.g. a hold that ended): nothing to settle.
            None => Err(Error::Closed(
                "the delivery was already settled or released".into(),
            )),
            Some(held) => self.settle(id, held, action).await,
        };
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    async fn settle(&mut self, id: u64, mut held: Held, action: Action) -> Result<()> {
        let entity = self.ctx.receive_entity.clone();
        // fe2o3-amqp senders (busway-sb-emulator's among them) lose a disposition that arrives
        // before they have recorded the transfer as unsettled, which an instant settlement (an
        // undecodable message, an auto-ack) can do; the message would then wait for its lock to
        // expire. Settling no sooner than a few milliseconds after receipt avoids that.
        let age = held.received_at.elapsed();
        if age < MIN_AGE_BEFORE_SETTLING {
            tokio::time::sleep(MIN_AGE_BEFORE_SETTLING - age).await;
        }
        let outcome = match action {
            Action::Ack => self.link.complete(&held.message).await,
            Action::Release => self.link.abandon(&held.message, None).await,
            Action::Redeliver {
                delay,
                first_failure,
            } if delay.is_zero() => {
                let props = [(
                    codec::FIRST_FAILURE.to_owned(),
                    busway_core::message::format_time(first_failure).into(),
                )]
                .into_iter()
                .collect();
                self.link.abandon(&held.message, Some(props)).await
            }
            Action::Redeliver {
                delay,
                first_failure,
            } => {
                if !self.ctx.routed {
                    // No rule keeps a copy to this group: hold the lock for the delay instead.
                    held.release_at = Some(Instant::now() + delay);
                    self.held.insert(id, held);
                    return Ok(());
                }
                match schedule_copy(&self.ctx, &held, delay, first_failure).await {
                    Ok(()) => self.link.complete(&held.message).await,
                    Err(e) => {
                        // The copy was not scheduled: give the original back so nothing is lost.
                        if let Err(e) = self.link.abandon(&held.message, None).await {
                            tracing::warn!(error = %e, "abandoning after a failed schedule");
                        }
                        return Err(e);
                    }
                }
            }
            Action::DeadLetter(meta) => {
                let options = DeadLetterOptions {
                    dead_letter_reason: Some(meta.reason.as_str().to_owned()),
                    dead_letter_error_description: Some(codec::description(&meta.error)),
                    properties_to_modify: Some(codec::dead_letter_properties(&meta)),
                };
                self.link.dead_letter(&held.message, options).await
            }
        };
        outcome.map_err(|e| classify("settling", &entity, e))
    }

    /// After the last delivery: a cancelled receive may have left credit for one message on the
    /// link; take it (or let the receive drain the credit) and give it back, so it does not wait
    /// for its lock to expire after the link closes.
    async fn sweep(&mut self) {
        if self.credit_out
            && let Ok(Some(m)) = self.link.receive_one(Duration::from_millis(20)).await
            && let Err(e) = self.link.abandon(&m, None).await
        {
            tracing::debug!(error = %e, "abandoning a swept message");
        }
        for (_, held) in self.held.drain() {
            let _ = self.link.abandon(&held.message, None).await;
        }
    }
}

/// Schedules a copy of `held` for `delay` from now, addressed to this group only.
async fn schedule_copy(
    ctx: &Context,
    held: &Held,
    delay: Duration,
    first_failure: DateTime<Utc>,
) -> Result<()> {
    let mut copy = codec::resend_copy(held.message.raw_amqp_message())?;
    codec::set_property(&mut copy, codec::ATTEMPT, (held.attempt + 1).to_string());
    codec::set_property(
        &mut copy,
        codec::FIRST_FAILURE,
        busway_core::message::format_time(first_failure),
    );
    if ctx.send_entity != ctx.receive_entity {
        codec::set_property(&mut copy, codec::TARGET_GROUP, ctx.group.clone());
    }
    codec::check_size(&copy, ctx.max_message_bytes)?;
    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    ctx.senders
        .schedule(&ctx.send_entity, copy, at)
        .await
        .map(|_| ())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
