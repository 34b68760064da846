//! # busway-rabbitmq
//!
//! busway's RabbitMQ adapter, on [`lapin`]: [`RabbitMqBroker`] implements busway's
//! [`Publisher`](busway_core::Publisher), [`Subscriber`](busway_core::Subscriber) and
//! [`DeadLetters`](busway_core::DeadLetters) with the semantics every busway broker honours.
//!
//! ## Topology
//!
//! | busway                         | RabbitMQ                                                              |
//! |--------------------------------|-----------------------------------------------------------------------|
//! | topic `t`                      | durable **topic exchange** `t`; messages are routed with their CloudEvents `type` as routing key |
//! | group `g` of `t`               | durable **queue `t.g`** (classic, or quorum by option), bound to `t` (and `t.due`) with `#`: every group gets every message, the members of a group compete |
//! | group asking per-key order     | the same queue with `x-single-active-consumer`: one member receives at a time, the others stand by |
//! | dead letters of `g`            | direct **exchange `t.dlx`** → durable **queue `t.g.dlq`** (binding key `t.g`); `t.g` dead-letters into it too (`x-dead-letter-exchange`) |
//! | redelivery after a delay `d`   | **wait queue `t.g.wait.<ms>`**: message TTL `d`, dead-lettered back to `t.g` through the default exchange. No plugin needed |
//! | scheduled delivery in `d`      | **schedule queue `t.due.<ms>`**: message TTL `d`, dead-lettered into topic exchange `t.due`, which every group's queue is bound to |
//! | scheduled further than a TTL can hold (~49 days) | hops of at most 4,290,000,000 ms in the longest schedule queue, the message carrying `busway-due`; a consumer that receives it before then sends it through its group's wait queue for the rest (confirmed, then acked), so no group handles it early |
//! | due while no group is bound    | `t.due`'s alternate exchange **`t.unrouted`** (fanout) parks it in durable **queue `t.unrouted`**; the next group to subscribe moves it into `t` (confirmed, then acked). The group name `unrouted` is reserved |
//!
//! Wait and schedule queues expire (`x-expires`) ten minutes after their last use beyond
//! their TTL; delays are rounded up to three significant digits of milliseconds so jittered
//! backoffs share a few queues. With [`RabbitMqConfig::declare_topology`] off, busway declares
//! nothing and uses the objects above as they exist.
//!
//! ## Delivery semantics
//!
//! - **Publishing** is persistent (`delivery_mode` 2), `mandatory` (a message no queue would
//!   receive fails with [`ErrorKind::Unroutable`](busway_core::ErrorKind::Unroutable)) and
//!   confirmed; confirms are pipelined on one channel, so concurrent publishes and batches keep
//!   many messages in flight. A negative confirm is
//!   [`ErrorKind::Rejected`](busway_core::ErrorKind::Rejected). A message is refused before
//!   sending with [`ErrorKind::TooLarge`](busway_core::ErrorKind::TooLarge) when it is over
//!   [`RabbitMqConfig::max_message_bytes`], or its properties over the connection's
//!   `frame_max` (AMQP cannot split them, and RabbitMQ closes the connection over them), each
//!   less [`METADATA_HEADROOM`](busway_core::preflight::METADATA_HEADROOM): whatever busway
//!   publishes can later be redelivered and dead-lettered with busway's metadata headers.
//!   Copies that would not fit a frame fail with `TooLarge` too. During an outage a publish
//!   waits for the reconnection up to [`RabbitMqConfig::publish_timeout`], then fails with
//!   [`ErrorKind::Timeout`](busway_core::ErrorKind::Timeout); it may be resent after a
//!   connection loss, so consumers deduplicate (busway's dedup middleware).
//! - **Consuming** uses manual acks and a prefetch equal to
//!   [`SubscribeOptions::prefetch`](busway_core::SubscribeOptions) (the consumer runtime sets it
//!   from its concurrency). The attempt number is the one a redelivery copy carries in
//!   `busway-attempt` (busway-core's shared redelivery headers; 1 without a copy), plus the
//!   earlier deliveries of this copy: the quorum `x-delivery-count`, or 1 when the broker flags
//!   a redelivery on a classic queue.
//! - **Redelivery** republishes a copy carrying `busway-attempt` and `busway-first-failure`,
//!   to `t.g` (no delay) or its wait queue, waits for the confirm, then acks the original.
//!   **Dead-lettering** republishes the original bytes and properties, plus the
//!   `busway-dlq-*` metadata headers, through `t.dlx`, confirmed, then acks. A settlement that
//!   fails leaves its delivery unsettled, so the runtime can try again or fall back. A delivery
//!   dropped unsettled comes back with its attempt counted: as a copy to `t.g` carrying the next
//!   attempt (then the original is acked), or, if the copy cannot be sent, requeued. (A classic
//!   queue only flags a requeued message as redelivered, so plain requeues could not count.)
//! - After a lost connection or a broker restart, both connections are re-established with
//!   exponential backoff ([`ReconnectConfig`]), topology is declared again, consumers resume
//!   and publishers carry on. Deliveries handed out before the loss cannot be acked any more
//!   (their settlement fails); the broker has requeued them and delivers them again.
//! - **Dead letters** are peeked with `basic.get` (and given back in order), redriven one by
//!   one to the group's own queue (confirmed, then acked; busway's headers are stripped, so
//!   the message starts a fresh set of attempts), and purged with `queue.purge`.
//!   [`DeadLetters::list`](busway_core::DeadLetters::list) covers the groups this handle has
//!   subscribed to or inspected: AMQP 0-9-1 cannot enumerate queues.
//! - **Limits of RabbitMQ queues**: a new group starts with the messages published after its
//!   queue exists: there is no history to replay, so
//!   [`StartPosition::Earliest`](busway_core::StartPosition) fails at `subscribe` with a
//!   configuration error naming `start_position` (even for a queue that exists already, where
//!   it would change nothing: whether a consumer starts must not depend on the broker's state);
//!   a message that was prefetched but never handed out, then given back by
//!   `close`, counts as a delivery attempt (the broker flags it redelivered).
//! - Connection loss without a TCP reset is detected by AMQP heartbeats: set
//!   `?heartbeat=10` in the URL for detection within ~20 s (the broker default is 60 s).
//!
//! ## CloudEvents on AMQP 0-9-1
//!
//! See [`codec`]: the native properties `message_id`, `type`, `app_id` (source),
//! `content_type`, `timestamp` and `correlation_id`, and `cloudEvents_*` headers for the other
//! attributes; structured mode is read. Messages from
//! clients that know nothing of CloudEvents are read from their native properties. A message
//! that cannot be decoded reaches the runtime as
//! [`Delivery::undecodable`](busway_core::Delivery::undecodable) and is dead-lettered,
//! bytes and properties unchanged.
//!
//! ## Modules
//!
//! Every busway adapter names the same parts the same way: `connection` (the two AMQP
//! connections, publishing and consuming, and reconnection), `topology` (exchange and queue
//! names and declarations), `publish` (confirmed publishing, the pre-publish check), `subscribe`
//! (consuming a group's queue) with `subscribe::settle` (ack, redelivery copy, dead letter) and
//! `subscribe::due` (holding back a scheduled message that arrives before it is due),
//! `dead_letters` (list, peek, redrive, purge), [`codec`] (CloudEvents on AMQP 0-9-1), `error`
//! (lapin errors classified into busway's), `config`, `broker` (the handle tying them together)
//! and `fuzzing` (behind the `fuzzing` feature). `parked` is RabbitMQ's own: scheduled messages that fell due while no group
//! was bound.
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//! use busway_core::{handler_fn, Consumer, HandlerError, Message, Publisher};
//! use busway_rabbitmq::{QueueType, RabbitMqBroker, RabbitMqConfig};
//!
//! # #[tokio::main] async fn main() -> busway_core::Result<()> {
//! let config = RabbitMqConfig::new("amqps://app:secret@rabbit.internal:5671/shop?heartbeat=10")
//!     .queue_type(QueueType::Quorum)
//!     .publish_timeout(Duration::from_secs(10));
//! let broker = RabbitMqBroker::connect(config).await?;
//! let consumer = Consumer::builder(std::sync::Arc::new(broker.clone()), "orders", "billing")
//!     .concurrency(16)
//!     .start(handler_fn(|msg: Message| async move {
//!         println!("{}", msg.id());
//!         Ok::<_, HandlerError>(())
//!     }))
//!     .await?;
//! broker.publish("orders", Message::builder("/shop", "order.placed").data("42").build()?).await?;
//! consumer.shutdown().await?;
//! # Ok(()) }
//! ```

mod broker;
pub mod codec;
mod config;
mod connection;
mod dead_letters;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod parked;
mod publish;
mod subscribe;
mod topology;

pub use broker::RabbitMqBroker;
pub use config::{
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_URL, QueueType, RabbitMqConfig, ReconnectConfig, TlsConfig,
};
