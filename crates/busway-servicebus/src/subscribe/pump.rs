//! The task that owns one receive link: it receives, hands deliveries out, settles them, renews
//! their locks and, for delayed redeliveries, schedules the copies.
//!
//! The client settles a message only on the link that received it and needs `&mut` for every
//! operation, so a single task owns the link and delivery handles talk to it over a channel. A
//! receive is cancelled when a command arrives (receiving one message at a time is cancel-safe in
//! this client), so a settlement never waits for a receive to time out.
//!
//! Settlement follows busway's contract: a settlement that fails leaves the delivery with its
//! handle (nothing is given back behind the runtime's back), and a handle dropped unsettled
//! abandons its message, which Service Bus counts as a delivery. A link that fails (its
//! connection was lost, or an operation on it timed out) ends the pump at once: the locks of
//! the messages it received can only be settled on it, so their handles fail from then on and
//! Service Bus redelivers those messages when their locks expire, delivery counted. The caller
//! opens a fresh link.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use azservicebus::ServiceBusReceivedMessage;
use azservicebus::receiver::DeadLetterOptions;
use busway_core::redelivery::RedeliveryHeaders;
use busway_core::{DeadLetterMetadata, Delivery, DeliveryInfo, Error, Result};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::link::Link;
use super::settle::SbSettle;
use crate::codec;
use crate::connection::CLOSE_TIMEOUT;
use crate::error::{classify, is_lock_lost};
use crate::publish::Senders;

/// How soon a lock whose expiry is unknown (or reads as past) is renewed: shorter than the
/// shortest lock Service Bus grants.
const UNKNOWN_LOCK_RENEWAL: Duration = Duration::from_millis(500);

/// See [`Pump::settle`].
const MIN_AGE_BEFORE_SETTLING: Duration = Duration::from_millis(5);
/// How long [`Pump::confirm_settled`] waits for the broker to show a settlement took effect.
const CONFIRMATION_PATIENCE: Duration = Duration::from_secs(5);

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
    /// The busway topic subscribed to (reported in deliveries and dead-letter metadata).
    pub(crate) topic: String,
    pub(crate) group: String,
    /// Where copies for this group are sent: the Service Bus topic, or the queue itself.
    pub(crate) send_entity: String,
    /// The entity receivers read: `<topic>/Subscriptions/<group>` or the queue.
    pub(crate) receive_entity: String,
    /// The topic is a queue: copies need no address.
    pub(crate) queue: bool,
    pub(crate) senders: Arc<Senders>,
    pub(crate) lock_renewal: Duration,
    /// The broker's full limit, which redelivery copies may use.
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
}

pub(crate) struct Pump<L: Link> {
    link: L,
    ctx: Arc<Context>,
    commands_tx: mpsc::UnboundedSender<Command>,
    commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::Sender<Result<Delivery>>,
    held: HashMap<u64, Held>,
    next_id: u64,
    /// Unsettled deliveries this link may have out at once: the subscription's prefetch (1 for
    /// sessions: strict order per key). Handed-out deliveries count until they are settled.
    max_in_flight: usize,
    /// How long one receive waits; a session link is released after this long without messages.
    receive_wait: Duration,
    /// Session links end when idle, so other sessions get their turn.
    ends_when_idle: bool,
    /// A receive was cancelled, so the link may still hold credit for one message.
    credit_out: bool,
}

/// Why a pump stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The subscription closed and everything handed out was settled.
    Closed,
    /// A session link had nothing more to do.
    Idle,
    /// The link failed; deliveries still out are lost with it (their locks expire).
    Failed,
}

/// Whether the link survived what the pump just did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Usable,
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
    /// until it goes idle, or until the link fails), then disposes the link.
    pub(crate) async fn run(mut self) -> Ended {
        let ended = self.pump().await;
        if ended != Ended::Failed {
            self.sweep().await;
        }
        // A lost link never answers a detach.
        match tokio::time::timeout(CLOSE_TIMEOUT, self.link.dispose()).await {
            Ok(Err(e)) => {
                tracing::debug!(error = %e, entity = %self.ctx.receive_entity, "disposing a receiver");
            }
            Err(_) => {
                tracing::debug!(entity = %self.ctx.receive_entity, "disposing a receiver timed out")
            }
            Ok(Ok(())) => {}
        }
        ended
    }

    async fn pump(&mut self) -> Ended {
        loop {
            let closing = self.out.is_closed();
            if closing && self.held.is_empty() {
                return Ended::Closed;
            }
            let timer = self.next_timer();
            let wants = !closing && self.held.len() < self.max_in_flight;
            if !wants {
                let state = tokio::select! {
                    biased;
                    c = self.commands.recv() => self.on_command(c).await,
                    () = sleep_until(timer) => self.on_timers().await,
                    () = self.out.closed(), if !closing => LinkState::Usable,
                };
                if state == LinkState::Failed {
                    return Ended::Failed;
                }
                continue;
            }
            // First wait for room in the hand-off channel, so nothing is received (and locked)
            // that no one will take.
            let permit = tokio::select! {
                biased;
                c = self.commands.recv() => {
                    if self.on_command(c).await == LinkState::Failed {
                        return Ended::Failed;
                    }
                    continue;
                }
                () = sleep_until(timer) => {
                    if self.on_timers().await == LinkState::Failed {
                        return Ended::Failed;
                    }
                    continue;
                }
                p = self.out.clone().reserve_owned() => match p {
                    Ok(p) => p,
                    Err(_) => continue,
                },
            };
            let event = tokio::select! {
                biased;
                c = self.commands.recv() => Event::Command(c),
                () = sleep_until(timer) => Event::Timer,
                () = self.out.closed() => Event::Closed,
                r = self.link.receive_one(self.receive_wait) => Event::Received(r.map(|m| m.map(Box::new))),
            };
            self.credit_out = !matches!(event, Event::Received(_));
            let state = match event {
                Event::Command(c) => self.on_command(c).await,
                Event::Timer => self.on_timers().await,
                Event::Closed => LinkState::Usable,
                Event::Received(Ok(Some(message))) => {
                    let delivery = self.hand_out(*message);
                    permit.send(Ok(delivery));
                    LinkState::Usable
                }
                Event::Received(Ok(None)) => {
                    if self.ends_when_idle && self.held.is_empty() {
                        return Ended::Idle;
                    }
                    LinkState::Usable
                }
                Event::Received(Err(e)) => {
                    let err = classify("receiving", &self.ctx.receive_entity, e);
                    if self.ends_when_idle {
                        tracing::debug!(error = %err, "session receive failed; releasing the session");
                    } else {
                        tracing::warn!(error = %err, entity = %self.ctx.receive_entity, "receiving failed; reopening the link");
                        // The runtime hears that the subscription is recovering.
                        permit.send(Err(transient(err)));
                    }
                    LinkState::Failed
                }
            };
            if state == LinkState::Failed {
                return Ended::Failed;
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
        let attempt = decoded.carried_attempt.map_or(broker_count, |carried| {
            carried.max(1).saturating_add(broker_count - 1)
        });
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
            },
        );
        let info = DeliveryInfo {
            first_failure: decoded.first_failure,
            ordering_key: self.link.session_id().map(str::to_owned),
            ..DeliveryInfo::new(&self.ctx.topic, &self.ctx.group, attempt)
        };
        let settle = SbSettle::new(id, self.commands_tx.clone());
        let settle = Box::new(settle);
        match decoded.error {
            None => Delivery::new(decoded.message, info, settle),
            // The stand-in's body and id are the raw message's; the runtime dead-letters it and
            // the dead letter is the original (`Held`).
            Some(reason) => {
                let id = decoded.message.id().to_owned();
                let raw = decoded.message.data().clone();
                Delivery::undecodable(raw, Some(&id), reason, info, settle)
            }
        }
    }

    /// Half of what is left of the lock: early enough to survive a slow round trip.
    ///
    /// When the expiry is unknown or already past, the lock is renewed soon, and the renewal's
    /// answer gives the real expiry. That is the case for a session's first lock: Service Bus
    /// states it in .NET ticks on the link, which azservicebus reads as a date in year 1.
    fn renew_interval(&self, message: &ServiceBusReceivedMessage) -> Duration {
        let until = self
            .link
            .session_locked_until()
            .or_else(|| message.locked_until());
        let left = until
            .map(|u| u - time::OffsetDateTime::now_utc())
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|left| !left.is_zero());
        match left {
            Some(left) => (left / 2).max(Duration::from_millis(100)),
            None => UNKNOWN_LOCK_RENEWAL,
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.held.values().filter_map(|h| h.renew_at).min()
    }

    async fn on_timers(&mut self) -> LinkState {
        let now = Instant::now();
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
                        let err = classify("renewing a lock", &self.ctx.receive_entity, e);
                        if err.is_transient() {
                            tracing::warn!(error = %err, entity = %self.ctx.receive_entity, "renewing a lock failed; reopening the link");
                            return LinkState::Failed;
                        }
                        // The lock is gone: the broker redelivers the message; settling it
                        // will fail and say so.
                        tracing::warn!(error = %err, entity = %self.ctx.receive_entity, "a lock was lost");
                        held.renew_at = None;
                    }
                }
            }
            self.held.insert(id, held);
        }
        LinkState::Usable
    }

    async fn on_command(&mut self, command: Option<Command>) -> LinkState {
        // The pump keeps a sender itself, so the channel never ends while it runs.
        let Some(Command { id, action, reply }) = command else {
            return LinkState::Usable;
        };
        let (result, state) = match self.held.remove(&id) {
            // Already given back: nothing to settle.
            None => (
                Err(Error::Closed(
                    "the delivery was already settled or released".into(),
                )),
                LinkState::Usable,
            ),
            Some(held) => self.settle(id, held, action).await,
        };
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
        state
    }

    /// Settles `held`. On failure the delivery stays held (the runtime may try again or fall
    /// back to another settlement), unless the failure cost the link.
    async fn settle(&mut self, id: u64, mut held: Held, action: Action) -> (Result<()>, LinkState) {
        let entity = self.ctx.receive_entity.clone();
        // fe2o3-amqp senders (busway-sb-emulator's among them) lose a disposition that arrives
        // before they have recorded the transfer as unsettled, which an instant settlement (an
        // undecodable message, an auto-ack) can do; the message would then wait for its lock to
        // expire. Settling no sooner than a few milliseconds after receipt avoids that.
        let age = held.received_at.elapsed();
        if age < MIN_AGE_BEFORE_SETTLING {
            tokio::time::sleep(MIN_AGE_BEFORE_SETTLING - age).await;
        }
        // A dropped handle cannot try again: its delivery is never kept after a failure.
        let releasing = matches!(action, Action::Release);
        let (what, outcome) = match action {
            Action::Ack => ("completing", self.link.complete(&held.message).await),
            Action::Release => ("abandoning", self.link.abandon(&held.message, None).await),
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
                (
                    "abandoning",
                    self.link.abandon(&held.message, Some(props)).await,
                )
            }
            Action::Redeliver {
                delay,
                first_failure,
            } => {
                let sequence_number =
                    match schedule_copy(&self.ctx, &held, delay, first_failure).await {
                        Ok(n) => n,
                        Err(e) => {
                            // Nothing happened to the original: it stays with its handle.
                            self.held.insert(id, held);
                            return (Err(e), LinkState::Usable);
                        }
                    };
                let mut outcome = self.link.complete(&held.message).await;
                if outcome.is_ok() {
                    outcome = self.confirm_settled(&mut held).await;
                }
                if outcome.is_err() {
                    // The original stays (or comes back when its lock expires): take the copy
                    // back so the message is not delivered twice.
                    if let Err(e) = self
                        .ctx
                        .senders
                        .cancel_scheduled(&self.ctx.send_entity, sequence_number)
                        .await
                    {
                        tracing::warn!(error = %e, "cancelling a redelivery copy failed; the message may be delivered twice");
                    }
                }
                ("completing a redelivered message", outcome)
            }
            Action::DeadLetter(meta) => {
                let options = DeadLetterOptions {
                    dead_letter_reason: Some(meta.reason.as_str().to_owned()),
                    dead_letter_error_description: Some(codec::description(&meta.error)),
                    properties_to_modify: Some(codec::dead_letter_properties(&meta)),
                };
                let mut outcome = self.link.dead_letter(&held.message, options).await;
                if outcome.is_ok() {
                    // The runtime announces the dead letter once this returns.
                    outcome = self.confirm_settled(&mut held).await;
                }
                ("dead-lettering", outcome)
            }
        };
        match outcome {
            Ok(()) => (Ok(()), LinkState::Usable),
            Err(e) => {
                let lock_lost = is_lock_lost(&e);
                let err = classify(what, &entity, e);
                if err.is_transient() {
                    // The link (or its connection) may be gone, and with it the lock: the pump
                    // ends, and Service Bus redelivers the message when the lock expires.
                    tracing::warn!(error = %err, entity = %entity, "settling failed; reopening the link");
                    (Err(lost_with_link(err)), LinkState::Failed)
                } else if lock_lost || releasing {
                    // Nothing left to settle: the broker redelivers it (lock lost) or already
                    // has it back.
                    if releasing {
                        tracing::debug!(error = %err, entity = %entity, "abandoning a dropped delivery failed; its lock will expire");
                    }
                    (Err(err), LinkState::Usable)
                } else {
                    self.held.insert(id, held);
                    (Err(err), LinkState::Usable)
                }
            }
        }
    }

    /// Waits until the broker shows that it took the settlement of `held`: the client returns
    /// as soon as the disposition is queued for the connection, so a process that dies right
    /// after could leave the message locked (a delayed redelivery would then be delivered
    /// twice, a dead letter announced that is not there). Renewing the lock of a settled
    /// message fails with "lock lost", which is the confirmation. Session messages are locked
    /// by their session and cannot be probed one by one.
    async fn confirm_settled(
        &mut self,
        held: &mut Held,
    ) -> std::result::Result<(), azure_core::Error> {
        if self.link.session_id().is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + CONFIRMATION_PATIENCE;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.link.renew(&mut held.message).await {
                Err(e) if is_lock_lost(&e) => return Ok(()),
                Err(e) => return Err(e),
                // The broker has not processed the disposition yet.
                Ok(()) if Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Ok(()) => {
                    return Err(azure_core::Error::message(
                        azure_core::error::ErrorKind::Io,
                        "the broker did not confirm the settlement: timed out",
                    ));
                }
            }
        }
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

/// A receive error shown to the runtime as "recovering": the subscription reopens its link.
fn transient(err: Error) -> Error {
    if err.is_transient() {
        return err;
    }
    Error::Connection {
        message: format!("{err}; reopening the receive link"),
        source: None,
    }
}

/// A settlement that failed with its link: the delivery cannot be settled any more.
fn lost_with_link(err: Error) -> Error {
    Error::Closed(format!(
        "{err}; the link this delivery came on is gone, so Service Bus redelivers it when its lock expires, counting the delivery"
    ))
}

/// Schedules a copy of `held` for `delay` from now, addressed to this group only; returns its
/// sequence number.
async fn schedule_copy(
    ctx: &Context,
    held: &Held,
    delay: Duration,
    first_failure: DateTime<Utc>,
) -> Result<i64> {
    let mut copy = codec::resend_copy(held.message.raw_amqp_message())?;
    let headers = RedeliveryHeaders {
        attempt: held.attempt.saturating_add(1),
        first_failure,
        due: None,
    };
    for (name, value) in headers.to_headers() {
        codec::set_property(&mut copy, name, value);
    }
    if !ctx.queue {
        codec::set_property(&mut copy, codec::TARGET_GROUP, ctx.group.clone());
    }
    // The copy may use the broker's whole limit: the publish check kept room for this metadata.
    let size = codec::encoded_size(&copy);
    if size > ctx.max_message_bytes {
        return Err(Error::TooLarge {
            size,
            limit: ctx.max_message_bytes,
        });
    }
    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    ctx.senders.schedule(&ctx.send_entity, copy, at).await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
