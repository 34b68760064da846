//! Scheduled messages that arrive before they are due.
//!
//! A queue holds a message for at most ~49 days (RabbitMQ's TTL limit), so a message scheduled
//! further ahead waits in hops ([`topology::MAX_HOP_MS`]) and carries its due time. The
//! consumer that receives it early does not hand it out: it sends it through its group's wait
//! queue for what is left (at most one more hop), confirmed, then acks it. Each group holds back
//! its own copy, as each group received its own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::time::Instant;

use crate::broker::Shared;
use crate::codec;
use crate::publish::{Ensure, Outgoing};
use crate::topology;

/// How long to wait before giving a delivery back when its next hop could not be sent, so that
/// a broker in trouble does not see it again at once.
const PAUSE_AFTER_FAILED_HOP: Duration = Duration::from_secs(1);

/// The due time of `delivery` when it is not due yet.
pub(super) fn early(delivery: &Delivery, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    codec::due_of(&delivery.properties).filter(|due| *due > now)
}

/// Sends `delivery` through the group's wait queue until `due` (or for one more hop), then acks
/// it; if the copy cannot be sent the delivery goes back to the queue, after a pause. Returns
/// the delivery only where it must be handed out early: without declared topology the wait
/// queue may be missing, and a message handed out early beats one looped forever.
pub(super) async fn hold_back(
    shared: &Shared,
    topic: &str,
    group: &str,
    delivery: Delivery,
    due: DateTime<Utc>,
) -> Option<Delivery> {
    let left = (due - Utc::now()).to_std().unwrap_or_default();
    let ms = topology::quantize(left.min(Duration::from_millis(topology::MAX_HOP_MS)));
    let wait_queue = topology::wait_queue(topic, group, ms);
    let out = Outgoing {
        exchange: "",
        routing_key: &wait_queue,
        props: codec::next_hop(&delivery.properties),
        body: &delivery.data,
    };
    let deadline = Instant::now() + shared.config.publish_timeout;
    match shared
        .send(&out, Ensure::WaitQueue(topic, group, ms), deadline)
        .await
    {
        Ok(()) => {
            // If the ack is lost with the channel, the broker requeues the original and the
            // next consumer holds it back again: one more copy waits, none is lost.
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            None
        }
        Err(busway_core::Error::Unroutable(reason)) if !shared.config.declare_topology => {
            tracing::warn!(queue = %wait_queue, %reason, %due, "wait queue missing; handing a scheduled message out before it is due");
            Some(delivery)
        }
        Err(e) => {
            tracing::warn!(error = %e, topic, group, %due, "could not send a scheduled message on its next hop; giving it back");
            tokio::time::sleep(PAUSE_AFTER_FAILED_HOP).await;
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await;
            None
        }
    }
}
