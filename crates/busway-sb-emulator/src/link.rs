//! Tasks driving the links of a connection: incoming messages and requests, outgoing deliveries
//! and replies.
//!
//! Two fe2o3-amqp 0.14 behaviours shape this code:
//! - A `Sender` records a delivery as unsettled only after handing the transfer to the session, so
//!   a peer that settles before that leaves `send()` waiting forever. The window is tiny, but on a
//!   loaded machine the client's thread can be preempted inside it for milliseconds. We therefore
//!   never settle an incoming delivery before [`SETTLE_DELAY`] has passed (settlements are queued,
//!   so this adds latency, not a throughput limit), and send replies pre-settled.
//! - A `Sender` exposes no link credit. Deliveries are attempted with a short [`PROBE_WINDOW`]: if
//!   the transfer does not leave within it there is no credit, the message is put back untouched
//!   and tried again after [`PROBE_BACKOFF`], so a receiver without credit never hides a message
//!   from a competing receiver for longer than the window.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use fe2o3_amqp::{Receiver, Sendable, Sender, link::delivery::DeliveryInfo};
use fe2o3_amqp_types::{
    definitions::{self, ErrorCondition, Fields},
    messaging::{Body, DeliveryState, Message, message::__private::Deserializable},
    primitives::{Symbol, Value},
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    amqp::Reply,
    entity::{
        Acquired, Broker, Disposition, OpError, Source, Target,
        message::{AmqpMessage, DEAD_LETTER_DESCRIPTION, DEAD_LETTER_REASON},
    },
};

/// Minimum time between receiving a transfer and settling it (see module docs).
pub(crate) const SETTLE_DELAY: Duration = Duration::from_millis(20);
/// How long a delivery attempt may wait for link credit before the message is put back.
const PROBE_WINDOW: Duration = Duration::from_millis(5);
/// Pause after a delivery attempt found no credit.
const PROBE_BACKOFF: Duration = Duration::from_millis(15);
/// Message format of a Service Bus batch: one Data section per serialized message.
const BATCH_FORMAT: u32 = 0x8001_3700;

/// Turns an `OpError` into the AMQP error carried by a rejection or a detach.
pub(crate) fn amqp_error(error: &OpError) -> definitions::Error {
    definitions::Error::new(
        ErrorCondition::Custom(Symbol::from(error.condition)),
        Some(error.description.clone()),
        None,
    )
}

/// What to do with an incoming delivery: its outcome, decided by the link's handler.
type Verdict = Result<(), OpError>;

/// Receives messages on a link the client sends on, settling each after [`SETTLE_DELAY`].
pub(crate) async fn receive_loop<F>(
    mut receiver: Receiver,
    mut shutdown: watch::Receiver<bool>,
    mut handle: F,
) where
    F: FnMut(Option<u32>, AmqpMessage) -> Verdict + Send,
{
    let mut pending: VecDeque<(DeliveryInfo, Verdict, Instant)> = VecDeque::new();
    loop {
        let due = pending.front().map(|p| p.2);
        tokio::select! {
            delivery = receiver.recv::<Body<Value>>() => match delivery {
                Ok(delivery) => {
                    let format = *delivery.message_format();
                    let (info, message) = delivery.into_parts();
                    let verdict = handle(format, message);
                    pending.push_back((info, verdict, Instant::now() + SETTLE_DELAY));
                }
                Err(error) => {
                    tracing::debug!(%error, "incoming link ended");
                    break;
                }
            },
            () = sleep_until(due), if due.is_some() => {
                if let Some((info, verdict, _)) = pending.pop_front() {
                    let result = match verdict {
                        Ok(()) => receiver.accept(info).await,
                        Err(error) => receiver.reject(info, Some(amqp_error(&error))).await,
                    };
                    if let Err(error) = result {
                        tracing::debug!(%error, "settling an incoming delivery failed");
                    }
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    if let Err(error) = receiver.close().await {
        tracing::debug!(%error, "closing incoming link");
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Splits a transfer into the messages it carries (a batch holds one message per Data section).
pub(crate) fn unpack(
    format: Option<u32>,
    message: AmqpMessage,
) -> Result<Vec<AmqpMessage>, OpError> {
    if format != Some(BATCH_FORMAT) {
        return Ok(vec![message]);
    }
    let Body::Data(sections) = message.body else {
        return Err(OpError::bad_request("a batch must carry Data sections"));
    };
    sections
        .into_inner()
        .into_iter()
        .map(|data| {
            serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(&data.0)
                .map(|d| d.0)
                .map_err(|e| OpError::bad_request(format!("invalid message in batch: {e}")))
        })
        .collect()
}

/// Sends queued replies on a `$cbs` / `$management` reply link.
pub(crate) async fn reply_loop(
    mut sender: Sender,
    mut replies: mpsc::UnboundedReceiver<Reply>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            reply = replies.recv() => match reply {
                Some(reply) => {
                    // Pre-settled where the link allows it. Where the client asked for unsettled
                    // replies (pyamqp does) it may never settle them, so the outcome is not
                    // awaited: waiting would hold every later reply back.
                    let sendable = Sendable::builder().message(reply).settled(true).build();
                    match sender.send_batchable(sendable).await {
                        Ok(outcome) => drop(outcome),
                        Err(error) => {
                            tracing::debug!(%error, "reply link ended");
                            break;
                        }
                    }
                }
                None => break,
            },
            _ = sender.on_detach() => break,
            _ = shutdown.changed() => break,
        }
    }
    if let Err(error) = sender.close().await {
        tracing::debug!(%error, "closing reply link");
    }
}

/// A receive link: what it reads and how.
pub(crate) struct Delivering {
    pub broker: Arc<Broker>,
    pub source: Source,
    pub link: u64,
    pub session: Option<String>,
    pub receive_and_delete: bool,
}

/// Delivers messages to a receiving client until the link or the session lock goes away.
pub(crate) async fn delivery_loop(
    mut sender: Sender,
    spec: Delivering,
    mut shutdown: watch::Receiver<bool>,
) {
    let Delivering {
        broker,
        source,
        link,
        session,
        receive_and_delete,
    } = spec;
    let mut changes = broker.subscribe();
    let mut close_error = None;
    loop {
        changes.borrow_and_update();
        match broker.acquire(&source, link, session.as_deref(), receive_and_delete) {
            Acquired::SessionLost => {
                close_error = Some(OpError::session_lock_lost(
                    session.as_deref().unwrap_or_default(),
                ));
                break;
            }
            Acquired::Empty => {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    _ = sender.on_detach() => break,
                    _ = shutdown.changed() => break,
                }
            }
            Acquired::Message {
                token,
                seq,
                message,
            } => {
                let sendable = Sendable::builder()
                    .message(*message)
                    .settled(receive_and_delete)
                    .build();
                let deadline = Instant::now() + PROBE_WINDOW;
                let attempt = {
                    let send = sender.send_batchable(sendable);
                    tokio::pin!(send);
                    loop {
                        tokio::select! {
                            biased;
                            // A message ahead of this one came back (abandoned, lock expired) while
                            // we waited for credit: offer that one instead, as Service Bus delivers
                            // in sequence order. Checked first so that a settlement read just before
                            // the client's new credit wins over the credit.
                            changed = changes.changed() => {
                                if changed.is_err()
                                    || broker.available_before(&source, session.as_deref(), seq)
                                {
                                    break None;
                                }
                            }
                            sent = &mut send => break Some(sent),
                            () = tokio::time::sleep_until(deadline) => break None,
                        }
                    }
                };
                match attempt {
                    Some(Ok(outcome)) => {
                        tracing::trace!(link, "delivered");
                        broker.confirm_delivery(&token);
                        if receive_and_delete
                            && let Err(e) = broker.settle(&token, Some(link), Disposition::Complete)
                        {
                            tracing::debug!(error = %e.description, "receive-and-delete settle");
                        }
                        // Peek-lock settlements arrive as dispositions, which the wire shim
                        // settles with the broker and answers (see `wire.rs`): fe2o3 would not
                        // answer them correctly, so its outcome future is left unused.
                        drop(outcome);
                    }
                    Some(Err(error)) => {
                        broker.release_unsent(&token);
                        tracing::debug!(%error, "delivery link ended");
                        break;
                    }
                    None => {
                        tracing::trace!(link, "no credit; message put back");
                        broker.release_unsent(&token);
                        tokio::select! {
                            () = tokio::time::sleep(PROBE_BACKOFF) => {}
                            _ = sender.on_detach() => break,
                            _ = shutdown.changed() => break,
                        }
                    }
                }
            }
        }
    }
    broker.link_closed(link);
    let result = match close_error {
        Some(error) => sender.close_with_error(amqp_error(&error)).await,
        None => sender.close().await,
    };
    if let Err(error) = result {
        tracing::debug!(%error, "closing delivery link");
    }
}

/// Maps the client's outcome to a Service Bus settlement (`None` for a non-terminal state).
pub(crate) fn disposition_of(state: DeliveryState) -> Option<Disposition> {
    Some(match state {
        DeliveryState::Accepted(_) => Disposition::Complete,
        DeliveryState::Released(_) => Disposition::Release,
        DeliveryState::Modified(modified) => {
            let properties = fields(modified.message_annotations);
            if modified.undeliverable_here == Some(true) {
                Disposition::Defer(properties)
            } else {
                Disposition::Abandon(properties)
            }
        }
        DeliveryState::Rejected(rejected) => {
            let mut reason = None;
            let mut description = None;
            let mut properties = Vec::new();
            for (key, value) in fields(rejected.error.and_then(|e| e.info.map(|b| *b))) {
                match (key.as_str(), value) {
                    (DEAD_LETTER_REASON, Value::String(s)) => reason = Some(s),
                    (DEAD_LETTER_DESCRIPTION, Value::String(s)) => description = Some(s),
                    (_, value) => properties.push((key, value)),
                }
            }
            Disposition::DeadLetter {
                reason,
                description,
                properties,
            }
        }
        _ => return None,
    })
}

fn fields(fields: Option<Fields>) -> Vec<(String, Value)> {
    fields
        .map(|f| f.into_iter().map(|(k, v)| (k.0, v)).collect())
        .unwrap_or_default()
}

/// Sends accepted messages of an entity sender link into the broker.
pub(crate) fn entity_handler(
    broker: Arc<Broker>,
    target: Target,
) -> impl FnMut(Option<u32>, AmqpMessage) -> Verdict + Send {
    move |format, message| {
        let messages = unpack(format, message)?;
        broker.send(&target, messages)
    }
}
