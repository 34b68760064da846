//! The same application on whichever broker the configuration names.
//!
//! ```sh
//! cargo run --example config_swap                               # in-process broker
//! BUSWAY_CONFIG=examples/busway.toml cargo run --example config_swap
//! BUSWAY_BROKER=rabbitmq BUSWAY_RABBITMQ__URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!     cargo run --example config_swap --features rabbitmq
//! ```

use std::time::Duration;

use busway::{Bus, BusConfig, HandlerError, Json, Message, handler_fn};

/// Application code: knows nothing about the broker.
async fn run(bus: &Bus) -> busway::Result<u64> {
    let topic = format!("greetings-{}", std::process::id());
    let consumer = bus
        .consumer(topic.clone(), "printer")
        .start(handler_fn(|Json(name): Json<String>| async move {
            println!("  hello, {name}");
            Ok::<_, HandlerError>(())
        }))
        .await?;
    for name in ["Ada", "Grace", "Barbara"] {
        bus.publish(
            &topic,
            Message::builder("/greeter", "greeting.v1")
                .json(name)?
                .build()?,
        )
        .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while consumer.stats().acked < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(consumer.shutdown().await?.stats.acked)
}

#[tokio::main]
async fn main() -> busway::Result<()> {
    let config = BusConfig::load()?;
    println!("broker: {}", config.broker.as_str());
    let bus = Bus::connect(&config).await?;
    let handled = run(&bus).await?;
    println!("handled {handled} greetings");
    Ok(())
}
