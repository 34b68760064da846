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
    Backoff, Bus, DeliveryInfo, HandlerError, Json, Message, RedeliveryPolicy, RetryPolicy, State,
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

/// What the billing handlers share: here, a payment service that fails twice for order 3.
#[derive(Clone, Default)]
struct Billing {
    payment_calls: Arc<AtomicU32>,
}

/// A handler is an async function of what it needs from the delivery.
async fn bill(
    State(billing): State<Billing>,
    Json(event): Json<OrderPlaced>,
    info: DeliveryInfo,
) -> Result<(), HandlerError> {
    if event.amount_cents < 0 {
        // No retry can fix this: straight to the dead-letter queue, with the reason.
        return Err(HandlerError::permanent(format!(
            "order {} has a negative amount ({} cents)",
            event.order, event.amount_cents
        )));
    }
    if event.order == 3 && billing.payment_calls.fetch_add(1, Ordering::SeqCst) < 2 {
        println!("  order 3: payment service unavailable, attempt will be retried");
        return Err(HandlerError::transient("payment service unavailable"));
    }
    println!(
        "  billed order {} for {} ({} cents, delivery {})",
        event.order, event.customer, event.amount_cents, info.attempt
    );
    Ok(())
}

#[tokio::main]
async fn main() -> busway::Result<()> {
    let bus = Bus::memory();
    let billing = Billing::default();

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
        .state(billing.clone())
        .start(bill)
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
        billing.payment_calls.load(Ordering::SeqCst)
    );
    Ok(())
}
