//! busway in one screen, on the in-process broker: no setup.
//!
//! Publishes typed order events; the billing handler meets a flaky payment service (retried in
//! process, visible below) and one order it can never bill (dead-lettered with its reason).
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use busway::{
    Backoff, Bus, HandlerError, Incoming, Message, RedeliveryPolicy, RetryPolicy, handler_fn,
};
use serde::{Deserialize, Serialize};

/// The event: an order was placed.
#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order: u32,
    customer: String,
    amount_cents: i64,
}

impl OrderPlaced {
    const TYPE: &'static str = "shop.order.placed.v1";

    fn to_message(&self) -> busway::Result<Message> {
        Message::builder("/shop/checkout", Self::TYPE)
            .subject(format!("orders/{}", self.order))
            .partition_key(self.customer.clone())
            .json(self)?
            .build()
    }
}

#[tokio::main]
async fn main() -> busway::Result<()> {
    let bus = Bus::memory();
    let flaky_calls = Arc::new(AtomicU32::new(0));

    let billing = {
        let flaky_calls = flaky_calls.clone();
        handler_fn(move |incoming: Incoming| {
            let flaky_calls = flaky_calls.clone();
            async move {
                let event: OrderPlaced = incoming.message.decode_json()?;
                if event.amount_cents < 0 {
                    return Err(HandlerError::permanent(format!(
                        "order {} has a negative amount ({} cents)",
                        event.order, event.amount_cents
                    )));
                }
                if event.order == 3 && flaky_calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    println!("  order 3: payment service unavailable, attempt will be retried");
                    return Err(HandlerError::transient("payment service unavailable"));
                }
                println!(
                    "  billed order {} for {} ({} cents)",
                    event.order, event.customer, event.amount_cents
                );
                Ok(())
            }
        })
    };

    let consumer = bus
        .consumer("orders", "billing")
        .concurrency(4)
        .retry(RetryPolicy::fixed(Duration::from_millis(150), 3))
        .redelivery(RedeliveryPolicy::new(
            2,
            Backoff::Fixed {
                delay: Duration::from_millis(300),
            },
        ))
        .on_dead_letter(|alert| {
            println!(
                "  ALERT: message {} dead-lettered ({}): {}",
                alert.message_id, alert.metadata.reason, alert.metadata.error
            );
        })
        .start(billing)
        .await?;

    println!("publishing 5 orders");
    let orders = [
        (1, "ada", 1250),
        (2, "grace", 4000),
        (3, "edsger", 999),
        (4, "barbara", -500),
        (5, "alan", 7300),
    ];
    for (order, customer, amount_cents) in orders {
        let event = OrderPlaced {
            order,
            customer: customer.into(),
            amount_cents,
        };
        bus.publish("orders", event.to_message()?).await?;
    }

    // Wait until every order is either billed or dead-lettered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while consumer.stats().acked + consumer.stats().dead_lettered < 5 {
        if tokio::time::Instant::now() > deadline {
            eprintln!("gave up waiting: {:?}", consumer.stats());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = consumer.shutdown().await?;

    println!("dead-letter queue of orders/billing:");
    for letter in bus.dead_letters().peek("orders", "billing", 10).await? {
        if let Some(meta) = letter.metadata {
            println!(
                "  {} reason={} attempts={} error={:?}",
                letter.message.subject().unwrap_or(letter.message.id()),
                meta.reason,
                meta.attempts,
                meta.error
            );
        }
    }
    println!(
        "summary: {} received, {} billed, {} dead-lettered, {} handler calls for order 3",
        report.stats.received,
        report.stats.acked,
        report.stats.dead_lettered,
        flaky_calls.load(Ordering::SeqCst)
    );
    Ok(())
}
