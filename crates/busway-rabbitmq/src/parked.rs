//! Releasing scheduled messages that fell due while no group was bound.
//!
//! Such a message is routed by the topic's due exchange to its alternate exchange and parked
//! in `<topic>.unrouted` (see [`topology`](crate::topology)). When a group subscribes, after its
//! queue is bound, the parked messages are moved into the topic exchange one at a time: each is
//! published (confirmed) before it is acked, so a crash midway duplicates at most one message
//! and loses none.

use busway_core::{Error, Result};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::ShortString;
use tokio::time::Instant;

use crate::broker::Shared;
use crate::connection::Link;
use crate::publish::{Ensure, Outgoing};
use crate::topology::{self, short};
use crate::{codec, error};

impl Shared {
    /// Moves the messages parked for `topic` into its exchange, where the groups bound now
    /// receive them. Never fails the subscription that triggers it: what cannot be moved stays
    /// parked, and the next subscription (or reconnection) tries again.
    pub(crate) async fn release_parked(&self, link: &Link, topic: &str) {
        match self.try_release_parked(link, topic).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(
                topic,
                released,
                "delivered scheduled messages that fell due while no group was bound"
            ),
            Err(e) => tracing::warn!(
                topic,
                error = %e,
                "could not release parked scheduled messages; they stay parked until a group subscribes again"
            ),
        }
    }

    async fn try_release_parked(&self, link: &Link, topic: &str) -> Result<usize> {
        let queue = topology::parking(topic);
        // A channel of its own: a missing parking queue (topology managed elsewhere) closes it.
        let ch = link.channel("releasing parked scheduled messages").await?;
        let mut released = 0;
        let outcome = loop {
            let got = match ch
                .basic_get(short(&queue)?, BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(got)) => got.delivery,
                Ok(None) => break Ok(released),
                // Nothing was ever parked here (or the topology is someone else's to declare).
                Err(e) if error::is_not_found(&e) => break Ok(released),
                Err(e) => break Err(error::classify(e, &format!("reading queue `{queue}`"))),
            };
            // The broker's dead-lettering history belongs to the parking, not to the message.
            let props = codec::with_headers(&got.properties, |h| {
                h.retain(|k, _| !codec::is_broker_bookkeeping(k.as_str()));
            });
            // The routing key `publish` would have used: the event's type (groups bind `#`).
            let key = props
                .kind()
                .as_ref()
                .map(ShortString::to_string)
                .unwrap_or_default();
            let out = Outgoing {
                exchange: topology::exchange(topic),
                routing_key: &key,
                props,
                body: &got.data,
            };
            let deadline = Instant::now() + self.config.publish_timeout;
            if let Err(e) = self.send(&out, Ensure::Topic(topic), deadline).await {
                let _ = got
                    .acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await;
                break Err(e);
            }
            match got.acker.ack(BasicAckOptions::default()).await {
                Ok(true) => released += 1,
                // The copy is out and the parked message stays too: at least once.
                _ => {
                    break Err(Error::Connection {
                        message: format!(
                            "the channel reading `{queue}` closed; the last message released \
                             may be delivered twice"
                        ),
                        source: None,
                    });
                }
            }
        };
        let _ = ch.close(200, "OK".into()).await;
        outcome
    }
}
