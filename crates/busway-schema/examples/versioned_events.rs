//! Typed, versioned events on the in-process broker: no setup.
//!
//! An order event evolves from version 1 to version 2 (a currency is added). The example checks
//! the new schema's compatibility as CI would, then runs an old and a new producer against one
//! consumer on version 2: old events are upcast, an invalid event is refused at publish, and
//! data that breaks the schema is dead-lettered with reason `schema_validation`.
//!
//! ```sh
//! cargo run -p busway-schema --example versioned_events
//! ```

use std::sync::Arc;
use std::time::Duration;

use busway_core::{Consumer, DeadLetters, DeliveryInfo, Message, Publisher, State};
use busway_memory::MemoryBroker;
use busway_schema::codec::JsonSchemaCodec;
use busway_schema::registry::MemoryRegistry;
use busway_schema::{
    DataSchema, Event, EventPublisher, EventRouter, EventType, Schema, SchemaError, SchemaRegistry,
};
use serde::{Deserialize, Serialize};

/// Version 1: amounts were always euros.
const ORDER_PLACED_V1: &str = r#"{
    "type": "object",
    "properties": {
        "order": {"type": "integer", "minimum": 1},
        "amount_cents": {"type": "integer", "minimum": 0}
    },
    "required": ["order", "amount_cents"],
    "additionalProperties": false
}"#;

/// Version 2: an optional currency. Readers of version 2 read version 1 data (BACKWARD).
const ORDER_PLACED_V2: &str = r#"{
    "type": "object",
    "properties": {
        "order": {"type": "integer", "minimum": 1},
        "amount_cents": {"type": "integer", "minimum": 0},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
    },
    "required": ["order", "amount_cents"],
    "additionalProperties": false
}"#;

/// What a version 3 might have done: require the currency. Old events have none, so a
/// version 3 reader could not read them: the compatibility check says no.
const ORDER_PLACED_V3_BREAKING: &str = r#"{
    "type": "object",
    "properties": {
        "order": {"type": "integer", "minimum": 1},
        "amount_cents": {"type": "integer", "minimum": 0},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}
    },
    "required": ["order", "amount_cents", "currency"],
    "additionalProperties": false
}"#;

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlacedV1 {
    order: u64,
    amount_cents: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order: u64,
    amount_cents: i64,
    currency: String,
}

impl EventType for OrderPlacedV1 {
    const TYPE: &'static str = "shop.order.placed";
    const VERSION: u32 = 1;
    type Codec = JsonSchemaCodec<Self>;
    fn codec() -> Result<Self::Codec, SchemaError> {
        JsonSchemaCodec::new(ORDER_PLACED_V1)
    }
}

impl EventType for OrderPlaced {
    const TYPE: &'static str = "shop.order.placed";
    const VERSION: u32 = 2;
    type Codec = JsonSchemaCodec<Self>;
    fn codec() -> Result<Self::Codec, SchemaError> {
        JsonSchemaCodec::new(ORDER_PLACED_V2)
    }
}

/// The billing service's state, which handlers extract with `State`.
#[derive(Clone)]
struct Billing {
    desk: &'static str,
}

/// The handler takes version 2, whatever version was published, and the delivery beside it.
async fn bill(
    Event(placed): Event<OrderPlaced>,
    State(billing): State<Billing>,
    info: DeliveryInfo,
) {
    println!(
        "  {}: order {} for {} {} (from {}, attempt {})",
        billing.desk,
        placed.order,
        placed.amount_cents as f64 / 100.0,
        placed.currency,
        info.topic,
        info.attempt
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = MemoryBroker::new();
    let registry = Arc::new(MemoryRegistry::new());

    // 1. CI: version 1 is registered; is version 2 a safe change? Is a breaking version 3?
    registry
        .register(OrderPlaced::SUBJECT, Schema::json(ORDER_PLACED_V1))
        .await?;
    for (name, definition) in [("v2", ORDER_PLACED_V2), ("v3", ORDER_PLACED_V3_BREAKING)] {
        let report = registry
            .check_compatibility(OrderPlaced::SUBJECT, &Schema::json(definition))
            .await?;
        if report.is_compatible() {
            println!("CI: {name} is {} compatible: registering it", report.mode);
            registry
                .register(OrderPlaced::SUBJECT, Schema::json(definition))
                .await?;
        } else {
            println!("CI: {name} is refused under {}:", report.mode);
            for violation in &report.violations {
                println!("      {violation}");
            }
        }
    }

    // 2. The consumer takes version 2; version 1 events are upcast: they were all in euros.
    let router = EventRouter::new()
        .registry(registry.clone())
        .on(bill)
        .upcast(|old: OrderPlacedV1| OrderPlaced {
            order: old.order,
            amount_cents: old.amount_cents,
            currency: "EUR".into(),
        });
    let consumer = Consumer::builder(Arc::new(broker.clone()), "orders", "billing")
        .state(Billing { desk: "billing" })
        .start(router)
        .await?;

    // 3. An old and a new producer. Production would turn auto-registration off and rely on CI.
    let events = EventPublisher::builder(Arc::new(broker.clone()), "/shop/checkout")
        .registry(registry.clone())
        .auto_register(false)
        .build();
    println!("publishing");
    events
        .publish(
            "orders",
            &OrderPlacedV1 {
                order: 1,
                amount_cents: 1250,
            },
        )
        .await?;
    events
        .publish_with(
            "orders",
            &OrderPlaced {
                order: 2,
                amount_cents: 990,
                currency: "CHF".into(),
            },
            |m| m.partition_key("customer-7"),
        )
        .await?;
    let refused = events
        .publish(
            "orders",
            &OrderPlaced {
                order: 3,
                amount_cents: -5,
                currency: "euro".into(),
            },
        )
        .await;
    if let Err(e) = refused {
        println!("  refused at publish: {e}");
    }
    // Something bypasses the schema and publishes raw data that breaks it.
    let raw = Message::builder("/legacy", OrderPlaced::TYPE)
        .datacontenttype("application/json")
        .dataschema(DataSchema::of::<OrderPlaced>().to_string())
        .data(r#"{"order": 4, "amount_cents": "lots"}"#)
        .build()?;
    broker.publish("orders", raw).await?;

    // 4. Wait until every event is handled or dead-lettered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while consumer.stats().acked + consumer.stats().dead_lettered < 3 {
        if tokio::time::Instant::now() > deadline {
            eprintln!("gave up waiting: {:?}", consumer.stats());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = consumer.shutdown().await?;
    println!(
        "handled {}, dead-lettered {}",
        report.stats.acked, report.stats.dead_lettered
    );
    for letter in broker.peek("orders", "billing", 10).await? {
        if let Some(meta) = letter.metadata {
            println!(
                "  dead letter: reason={} error={:?}",
                meta.reason, meta.error
            );
        }
    }
    Ok(())
}
