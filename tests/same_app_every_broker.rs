//! The same application code on every broker compiled in, the broker chosen by configuration.
//!
//! The in-process broker always runs; others run when their feature is on, with their address
//! from the fixtures (`BUSWAY_*` variables or testcontainers).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use busway::{Bus, BusConfig, HandlerError, Json, Message, handler_fn};
use figment::Figment;
use figment::providers::{Format, Toml};

/// The application: greets everyone it is told about, once.
async fn app(bus: &Bus, topic: &str) -> BTreeSet<String> {
    let greeted = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let consumer = bus
        .consumer(topic.to_owned(), "greeter")
        .start({
            let greeted = greeted.clone();
            handler_fn(move |Json(name): Json<String>| {
                let greeted = greeted.clone();
                async move {
                    greeted.lock().unwrap().insert(name);
                    Ok::<_, HandlerError>(())
                }
            })
        })
        .await
        .expect("consumer starts");
    for name in ["ada", "grace", "barbara"] {
        let message = Message::builder("/test/app", "greeting.v1")
            .json(name)
            .unwrap()
            .build()
            .unwrap();
        bus.publish(topic, message).await.expect("publish");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while greeted.lock().unwrap().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app did not greet everyone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.shutdown().await.expect("shutdown");
    greeted.lock().unwrap().clone()
}

fn topic() -> String {
    format!("app-{}", uuid_like())
}

fn uuid_like() -> String {
    busway::Message::builder("/x", "x")
        .build()
        .unwrap()
        .id()
        .replace('-', "")
}

async fn run_with(config_toml: &str, topic: &str) {
    let config = BusConfig::from_figment(Figment::new().merge(Toml::string(config_toml)))
        .expect("valid configuration");
    let bus = Bus::connect(&config).await.expect("connect");
    assert_eq!(bus.broker(), config.broker);
    let greeted = app(&bus, topic).await;
    assert_eq!(
        greeted,
        ["ada", "barbara", "grace"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[tokio::test]
async fn in_process_broker() {
    run_with("broker = \"memory\"", &topic()).await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn rabbitmq() {
    let url = busway_testkit::fixtures::rabbitmq_url().await;
    run_with(
        &format!("broker = \"rabbitmq\"\n[rabbitmq]\nurl = \"{url}\""),
        &topic(),
    )
    .await;
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka() {
    let bootstrap = busway_testkit::fixtures::kafka_bootstrap().await;
    run_with(
        &format!("broker = \"kafka\"\n[kafka]\nbootstrap_servers = \"{bootstrap}\""),
        &topic(),
    )
    .await;
}

#[cfg(feature = "servicebus")]
#[tokio::test]
async fn servicebus_on_the_emulator() {
    use busway_sb_emulator::{Emulator, SubscriptionConfig, TopicConfig};
    // Service Bus entities are infrastructure: the topic and subscription exist beforehand.
    let emulator = Emulator::builder()
        .topic(TopicConfig::new("greetings").subscription(SubscriptionConfig::new("greeter")))
        .start()
        .await
        .expect("emulator starts");
    let config = format!(
        "broker = \"servicebus\"\n[servicebus]\nconnection_string = \"{}\"",
        emulator.connection_string()
    );
    run_with(&config, "greetings").await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_broker_that_is_not_compiled_in_is_a_config_error() {
    use busway::BrokerKind;
    assert!(Bus::is_compiled_in(BrokerKind::Memory));
    for kind in [
        BrokerKind::RabbitMq,
        BrokerKind::Kafka,
        BrokerKind::ServiceBus,
    ] {
        let config = BusConfig::from_toml(&format!("broker = \"{}\"", kind.as_str())).unwrap();
        if Bus::is_compiled_in(kind) {
            continue;
        }
        let err = Bus::connect(&config).await.unwrap_err();
        assert_eq!(err.kind(), busway::ErrorKind::Config);
        assert!(
            err.to_string()
                .contains(&format!("`{}` cargo feature", kind.as_str())),
            "{err}"
        );
    }
}
