//! The RabbitMQ objects behind topics and groups, their names, and their declaration.
//!
//! | busway                | RabbitMQ                                                                    |
//! |-----------------------|-----------------------------------------------------------------------------|
//! | topic `t`             | durable topic exchange `t`                                                  |
//! | group `g` of `t`      | durable queue `t.g`, bound to `t` and to `t.due` with `#`                   |
//! | dead letters of `g`   | direct exchange `t.dlx` → durable queue `t.g.dlq` (binding key `t.g`)       |
//! | redelivery after `d`  | queue `t.g.wait.<ms>`: message TTL `d`, dead-lettered back to `t.g`         |
//! | scheduled in `d`      | queue `t.due.<ms>`: message TTL `d`, dead-lettered into exchange `t.due`    |
//! | due, no group bound   | `t.due`'s alternate exchange `t.unrouted` (fanout) → durable queue `t.unrouted` |
//! | scheduled, older busway | queue `t.scheduled.<ms>`, dead-lettered into `t`; no longer declared      |
//!
//! A scheduled message is never dropped: one that falls due while no group is bound is routed
//! by `t.due` to its alternate exchange (RabbitMQ applies alternate exchanges to dead-lettered
//! messages too) and parked in `t.unrouted`; the next group to subscribe moves the parked
//! messages into `t`, each acked only after its copy is confirmed (see `parked`). Queues
//! declared by older versions, `t.scheduled.<ms>`, keep dead-lettering into `t` and expire.
//!
//! Declarations are idempotent, so they are simply repeated on every new connection (a broker
//! that lost its definitions gets them back) and cached within one.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use busway_core::{Error, Ordering, Result};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::QueueType;
use crate::error;

/// Longest suffix busway appends to a topic or group name (`.wait.` + a `u32` of ms).
const LONGEST_SUFFIX: usize = ".wait.4294967295".len() + 1;

/// Wait and schedule queues delete themselves after being unused for their TTL plus this,
/// so delays that are never used again do not leave queues behind.
const WAIT_QUEUE_GRACE: Duration = Duration::from_secs(600);

/// The longest delay a wait or schedule queue can hold (RabbitMQ's TTL limit, ~49 days).
pub(crate) const MAX_DELAY_MS: u64 = u32::MAX as u64;

/// The longest wait of one hop of a message scheduled further ahead than a queue can hold: the
/// largest delay under [`MAX_DELAY_MS`] that [`quantize`] keeps as it is. Such a message carries
/// busway-core's `busway-due` header, and the consumer that receives it before then sends it
/// through its group's wait queue again (see `subscribe::due`).
pub(crate) const MAX_HOP_MS: u64 = 4_290_000_000;

/// The durable topic exchange of a topic.
pub(crate) fn exchange(topic: &str) -> &str {
    topic
}

/// The queue of a group.
pub(crate) fn work_queue(topic: &str, group: &str) -> String {
    format!("{topic}.{group}")
}

/// The dead-letter exchange of a topic.
pub(crate) fn dead_letter_exchange(topic: &str) -> String {
    format!("{topic}.dlx")
}

/// The dead-letter queue of a group.
pub(crate) fn dead_letter_queue(topic: &str, group: &str) -> String {
    format!("{topic}.{group}.dlq")
}

/// The routing key that leads from the dead-letter exchange to a group's DLQ.
pub(crate) fn dead_letter_key(topic: &str, group: &str) -> String {
    work_queue(topic, group)
}

/// The queue holding a group's messages for `delay_ms` before they return to the group.
pub(crate) fn wait_queue(topic: &str, group: &str, delay_ms: u64) -> String {
    format!("{topic}.{group}.wait.{delay_ms}")
}

/// The exchange a topic's scheduled messages are dead-lettered into when they fall due.
pub(crate) fn due_exchange(topic: &str) -> String {
    format!("{topic}.due")
}

/// The queue holding a topic's scheduled messages for `delay_ms` before they fall due.
pub(crate) fn schedule_queue(topic: &str, delay_ms: u64) -> String {
    format!("{topic}.due.{delay_ms}")
}

/// The alternate exchange of [`due_exchange`], and the queue it parks messages in: scheduled
/// messages that fell due while no group was bound.
pub(crate) fn parking(topic: &str) -> String {
    format!("{topic}.unrouted")
}

/// The group name whose queue would be the topic's [`parking`] queue.
const RESERVED_GROUP: &str = "unrouted";

/// Rounds a delay up to whole milliseconds with at most three significant digits, so that
/// jittered backoffs share a bounded set of wait queues; a message is never early, and at most
/// 1% late.
pub(crate) fn quantize(delay: Duration) -> u64 {
    let ms = u64::try_from(delay.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    let mut unit = 1;
    while ms / unit >= 1000 {
        unit *= 10;
    }
    ms.div_ceil(unit).saturating_mul(unit).min(MAX_DELAY_MS)
}

/// Checks that a topic or group can name RabbitMQ objects.
pub(crate) fn check_name(field: &str, name: &str) -> Result<()> {
    // busway's own rules first (not empty, bounded for dead-letter metadata), then the broker's.
    busway_core::preflight::check_name(field, name)?;
    if name.starts_with("amq.") {
        return Err(Error::config(
            field,
            format!("{name:?}: names starting with `amq.` are reserved by RabbitMQ"),
        ));
    }
    if name.len() * 2 + LONGEST_SUFFIX > 255 {
        return Err(Error::config(
            field,
            format!(
                "{name:?} is too long: RabbitMQ names are limited to 255 bytes, suffixes included"
            ),
        ));
    }
    Ok(())
}

/// Checks a group name: a valid name, and not the one whose queue is the topic's parking queue.
pub(crate) fn check_group(group: &str) -> Result<()> {
    check_name("group", group)?;
    if group == RESERVED_GROUP {
        return Err(Error::config(
            "group",
            format!(
                "{group:?} is reserved: `<topic>.{RESERVED_GROUP}` parks scheduled messages \
                 that fell due while no group was bound"
            ),
        ));
    }
    Ok(())
}

/// A short string for a name checked by [`check_name`] (or derived from checked names).
pub(crate) fn short(name: &str) -> Result<ShortString> {
    ShortString::try_new(name)
        .map_err(|_| Error::config("name", format!("{name:?} is longer than 255 bytes")))
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Declares topology on a channel, remembering what was declared on the current connection.
pub(crate) struct Topology {
    queue_type: QueueType,
    declared: Mutex<(u64, HashSet<String>)>,
}

impl Topology {
    pub(crate) fn new(queue_type: QueueType) -> Self {
        Self {
            queue_type,
            declared: Mutex::new((0, HashSet::new())),
        }
    }

    /// Whether `key` was declared on connection `generation` already.
    fn known(&self, generation: u64, key: &str) -> bool {
        let declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        declared.0 == generation && declared.1.contains(key)
    }

    fn remember(&self, generation: u64, key: String) {
        let mut declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        if declared.0 != generation {
            *declared = (generation, HashSet::new());
        }
        declared.1.insert(key);
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text(self.queue_type.as_str()));
        args
    }

    async fn declare_exchange(&self, ch: &Channel, name: &str, kind: ExchangeKind) -> Result<()> {
        self.declare_exchange_with(ch, name, kind, FieldTable::default())
            .await
    }

    async fn declare_exchange_with(
        &self,
        ch: &Channel,
        name: &str,
        kind: ExchangeKind,
        args: FieldTable,
    ) -> Result<()> {
        ch.exchange_declare(
            short(name)?,
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            args,
        )
        .await
        .map_err(|e| error::classify(e, &format!("declaring exchange `{name}`")))
    }

    async fn declare_queue(&self, ch: &Channel, name: &str, args: FieldTable) -> Result<()> {
        ch.queue_declare(short(name)?, QueueDeclareOptions::durable(), args)
            .await
            .map(drop)
            .map_err(|e| error::classify(e, &format!("declaring queue `{name}`")))
    }

    async fn bind(&self, ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
        ch.queue_bind(
            short(queue)?,
            short(exchange)?,
            short(key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            error::classify(
                e,
                &format!("binding queue `{queue}` to exchange `{exchange}`"),
            )
        })
    }

    /// The topic exchange, once per connection.
    pub(crate) async fn topic(&self, ch: &Channel, generation: u64, topic: &str) -> Result<()> {
        let key = format!("exchange {topic}");
        if self.known(generation, &key) {
            return Ok(());
        }
        self.declare_exchange(ch, exchange(topic), ExchangeKind::Topic)
            .await?;
        self.remember(generation, key);
        Ok(())
    }

    /// The exchange scheduled messages fall due into, `t.due`, with its alternate exchange and
    /// the parking queue behind it, so that a message falling due while no group is bound is
    /// parked rather than dropped.
    async fn declare_due(&self, ch: &Channel, topic: &str) -> Result<()> {
        let parking = parking(topic);
        self.declare_exchange(ch, &parking, ExchangeKind::Fanout)
            .await?;
        self.declare_queue(ch, &parking, self.queue_args()).await?;
        self.bind(ch, &parking, &parking, "").await?;
        let mut args = FieldTable::default();
        args.insert("alternate-exchange".into(), text(&parking));
        self.declare_exchange_with(ch, &due_exchange(topic), ExchangeKind::Topic, args)
            .await
    }

    /// [`Self::declare_due`], once per connection.
    async fn due(&self, ch: &Channel, generation: u64, topic: &str) -> Result<()> {
        let key = format!("due {topic}");
        if self.known(generation, &key) {
            return Ok(());
        }
        self.declare_due(ch, topic).await?;
        self.remember(generation, key);
        Ok(())
    }

    /// Everything a group needs: the topic exchange, the group's queue bound to it and to the
    /// topic's due exchange, and the dead-letter exchange and queue. Always declared (no cache):
    /// subscribing is rare and must repair a queue deleted behind busway's back.
    pub(crate) async fn group(
        &self,
        ch: &Channel,
        topic: &str,
        group: &str,
        ordering: Ordering,
    ) -> Result<()> {
        let queue = work_queue(topic, group);
        let dlx = dead_letter_exchange(topic);
        let dlq = dead_letter_queue(topic, group);
        self.declare_exchange(ch, exchange(topic), ExchangeKind::Topic)
            .await?;
        self.declare_exchange(ch, &dlx, ExchangeKind::Direct)
            .await?;
        self.declare_queue(ch, &dlq, self.queue_args()).await?;
        self.bind(ch, &dlq, &dlx, &dead_letter_key(topic, group))
            .await?;
        let mut args = self.queue_args();
        // Whatever the broker itself dead-letters (a quorum delivery limit, a reject by another
        // tool) lands in the group's DLQ too.
        args.insert("x-dead-letter-exchange".into(), text(&dlx));
        args.insert(
            "x-dead-letter-routing-key".into(),
            text(&dead_letter_key(topic, group)),
        );
        if ordering == Ordering::PerKey {
            // One consumer at a time receives the queue's messages in order; others stand by
            // and take over if it goes away. The runtime then keeps per-key order in process.
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        self.declare_queue(ch, &queue, args).await?;
        self.bind(ch, &queue, exchange(topic), "#").await?;
        self.declare_due(ch, topic).await?;
        self.bind(ch, &queue, &due_exchange(topic), "#").await
    }

    fn delay_args(
        &self,
        delay_ms: u64,
        dead_letter_exchange: &str,
        dead_letter_key: Option<&str>,
    ) -> FieldTable {
        let mut args = self.queue_args();
        let ms = i64::try_from(delay_ms).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms));
        let grace = i64::try_from(WAIT_QUEUE_GRACE.as_millis()).unwrap_or(i64::MAX);
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(ms.saturating_add(grace)),
        );
        args.insert("x-dead-letter-exchange".into(), text(dead_letter_exchange));
        if let Some(key) = dead_letter_key {
            args.insert("x-dead-letter-routing-key".into(), text(key));
        }
        if self.queue_type == QueueType::Quorum {
            // Quorum queues dead-letter at most once unless asked; expiring out of a wait queue
            // is how the message comes back, so it must be at least once.
            args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            args.insert("x-overflow".into(), text("reject-publish"));
        }
        args
    }

    /// The wait queue of a group for `delay_ms`, declared before every use: the declaration is
    /// what keeps the queue from expiring while it holds messages (`x-expires` counts from the
    /// last declaration, not the last publish).
    pub(crate) async fn wait_queue(
        &self,
        ch: &Channel,
        topic: &str,
        group: &str,
        delay_ms: u64,
    ) -> Result<String> {
        let name = wait_queue(topic, group, delay_ms);
        let args = self.delay_args(delay_ms, "", Some(&work_queue(topic, group)));
        self.declare_queue(ch, &name, args).await?;
        Ok(name)
    }

    /// The schedule queue of a topic for `delay_ms` (declared before every use, as above), and
    /// the due exchange it dead-letters into. Expired messages go to `t.due` with the routing key
    /// they were published with (the queue's name), which every group's `#` binding matches;
    /// with no group bound, `t.due` parks them in `t.unrouted`.
    pub(crate) async fn schedule_queue(
        &self,
        ch: &Channel,
        generation: u64,
        topic: &str,
        delay_ms: u64,
    ) -> Result<String> {
        self.due(ch, generation, topic).await?;
        let name = schedule_queue(topic, delay_ms);
        let args = self.delay_args(delay_ms, &due_exchange(topic), None);
        self.declare_queue(ch, &name, args).await?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn delays_round_up_to_three_significant_digits() {
        assert_eq!(quantize(Duration::from_millis(200)), 200);
        assert_eq!(quantize(Duration::from_micros(1)), 1);
        assert_eq!(quantize(Duration::from_millis(999)), 999);
        assert_eq!(quantize(Duration::from_millis(1234)), 1240);
        assert_eq!(quantize(Duration::from_millis(2000)), 2000);
        assert_eq!(
            quantize(Duration::from_secs(3600) + Duration::from_millis(1)),
            3_610_000
        );
        assert_eq!(quantize(Duration::from_secs(u64::MAX)), MAX_DELAY_MS);
        assert_eq!(quantize(Duration::from_millis(MAX_HOP_MS)), MAX_HOP_MS);
        const { assert!(MAX_HOP_MS < MAX_DELAY_MS) };
        assert!(quantize(Duration::from_millis(MAX_HOP_MS + 1)) >= MAX_DELAY_MS);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("topic", "orders").is_ok());
        assert!(check_name("topic", "").is_err());
        assert!(check_name("topic", "amq.orders").is_err());
        assert!(check_name("topic", &"x".repeat(200)).is_err());
        assert_eq!(
            wait_queue("orders", "billing", 1240),
            "orders.billing.wait.1240"
        );
        assert_eq!(dead_letter_queue("orders", "billing"), "orders.billing.dlq");
        assert_eq!(schedule_queue("orders", 1240), "orders.due.1240");
        assert!(check_group("billing").is_ok());
        let err = check_group("unrouted").unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
