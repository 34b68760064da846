//! Fidelity tests for topics: fan-out, rule filters, rule management and auto-forwarding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use azservicebus::{
    ServiceBusMessage, ServiceBusReceiveMode, ServiceBusReceiver, ServiceBusReceiverOptions,
    SubQueue,
    administration::{CorrelationRuleFilter, RuleFilter as ClientRuleFilter, SqlRuleFilter},
};
use busway_sb_emulator::{
    CorrelationFilter, Emulator, QueueConfig, RuleConfig, SubscriptionConfig, TopicConfig,
};
use common::*;

async fn subscription_receiver(
    client: &mut Client,
    topic: &str,
    subscription: &str,
    sub_queue: SubQueue,
) -> ServiceBusReceiver {
    client
        .create_receiver_for_subscription(
            topic,
            subscription,
            ServiceBusReceiverOptions {
                receive_mode: ServiceBusReceiveMode::PeekLock,
                sub_queue,
                ..ServiceBusReceiverOptions::default()
            },
        )
        .await
        .expect("subscription receiver")
}

fn with_subject(text: &str, subject: &str) -> ServiceBusMessage {
    let mut m = ServiceBusMessage::new(text.to_string());
    m.set_subject(Some(subject.to_string()));
    m
}

fn with_property(text: &str, key: &str, value: &str) -> ServiceBusMessage {
    let mut m = ServiceBusMessage::new(text.to_string());
    m.application_properties_mut()
        .get_or_insert_with(Default::default)
        .insert(key.to_string(), value.into());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_fans_out_to_every_subscription() {
    within(async {
        let topic = TopicConfig::new("events")
            .subscription(SubscriptionConfig::new("billing"))
            .subscription(SubscriptionConfig::new("shipping"));
        let emulator = start(Emulator::builder().topic(topic)).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "events").await;
        s.send_message(ServiceBusMessage::new("order placed"))
            .await
            .unwrap();
        s.send_message(ServiceBusMessage::new("order paid"))
            .await
            .unwrap();
        for sub in ["billing", "shipping"] {
            let mut r = subscription_receiver(&mut client, "events", sub, SubQueue::None).await;
            for (expected, seq) in [("order placed", 1), ("order paid", 2)] {
                let m = receive_one(&mut r).await;
                assert_eq!(body(&m), expected, "subscription {sub}");
                assert_eq!(
                    m.sequence_number(),
                    seq,
                    "topic-assigned sequence numbers in {sub}"
                );
                r.complete_message(&m).await.unwrap();
            }
            assert_empty(&mut r, Duration::from_millis(200)).await;
            // Dispose, don't drop: a dropped fe2o3 receiver frees its handle at once, and a frame
            // the service sends for it afterwards ends the client's whole AMQP session.
            r.dispose().await.unwrap();
        }
        // Completing in one subscription does not affect the other.
        assert_eq!(
            emulator.message_counts("events/Subscriptions/billing"),
            Some((0, 0))
        );
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_filter_selects_messages() {
    within(async {
        let mut properties = BTreeMap::new();
        properties.insert("region".to_string(), serde_json::json!("eu"));
        let topic = TopicConfig::new("events")
            .subscription(
                SubscriptionConfig::new("orders").rule(RuleConfig::correlation(
                    "orders-only",
                    CorrelationFilter {
                        label: Some("order".into()),
                        ..CorrelationFilter::default()
                    },
                )),
            )
            .subscription(SubscriptionConfig::new("eu").rule(RuleConfig::correlation(
                "eu-only",
                CorrelationFilter {
                    properties,
                    ..CorrelationFilter::default()
                },
            )));
        let emulator = start(Emulator::builder().topic(topic)).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "events").await;
        s.send_message(with_subject("o1", "order")).await.unwrap();
        s.send_message(with_subject("i1", "invoice")).await.unwrap();
        s.send_message(with_property("e1", "region", "eu"))
            .await
            .unwrap();
        s.send_message(with_property("u1", "region", "us"))
            .await
            .unwrap();
        let mut orders =
            subscription_receiver(&mut client, "events", "orders", SubQueue::None).await;
        assert_eq!(body(&receive_one(&mut orders).await), "o1");
        assert_empty(&mut orders, Duration::from_millis(300)).await;
        let mut eu = subscription_receiver(&mut client, "events", "eu", SubQueue::None).await;
        assert_eq!(body(&receive_one(&mut eu).await), "e1");
        assert_empty(&mut eu, Duration::from_millis(300)).await;
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_filter_selects_messages() {
    within(async {
        let topic = TopicConfig::new("events").subscription(
            SubscriptionConfig::new("big-red")
                .rule(RuleConfig::sql("big-red", "color = 'red' AND size > 10")),
        );
        let emulator = start(Emulator::builder().topic(topic)).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "events").await;
        let message = |text: &str, color: &str, size: i64| {
            let mut m = ServiceBusMessage::new(text.to_string());
            let props = m
                .application_properties_mut()
                .get_or_insert_with(Default::default);
            props.insert("color".to_string(), color.into());
            props.insert("size".to_string(), size.into());
            m
        };
        s.send_message(message("small red", "red", 5))
            .await
            .unwrap();
        s.send_message(message("big blue", "blue", 50))
            .await
            .unwrap();
        s.send_message(message("big red", "red", 50)).await.unwrap();
        let mut r = subscription_receiver(&mut client, "events", "big-red", SubQueue::None).await;
        let m = receive_one(&mut r).await;
        assert_eq!(body(&m), "big red");
        assert_eq!(m.sequence_number(), 3);
        assert_empty(&mut r, Duration::from_millis(300)).await;
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_manager_adds_lists_and_removes_rules() {
    within(async {
        let topic = TopicConfig::new("events").subscription(SubscriptionConfig::new("s1"));
        let emulator = start(Emulator::builder().topic(topic)).await;
        let mut client = connect(&emulator).await;
        let mut rules = client.create_rule_manager("events", "s1").await.unwrap();
        let initial = rules.get_rules().await.unwrap();
        assert_eq!(initial.len(), 1);
        assert_eq!(initial[0].name, "$Default");
        assert!(matches!(initial[0].filters, ClientRuleFilter::True(_)));

        rules.delete_rule("$Default").await.unwrap();
        rules
            .create_rule(
                "vip",
                CorrelationRuleFilter::builder().subject("vip").build(),
            )
            .await
            .unwrap();
        rules
            .create_rule("sql", SqlRuleFilter::new("priority > 5"))
            .await
            .unwrap();
        let error = format!(
            "{:?}",
            rules
                .create_rule("sql", SqlRuleFilter::new("1=1"))
                .await
                .expect_err("duplicate")
        );
        assert!(
            error.contains("409"),
            "a duplicate rule name is a conflict: {error}"
        );
        let listed = rules.get_rules().await.unwrap();
        let names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["vip", "sql"]);
        match &listed[0].filters {
            ClientRuleFilter::Correlation(c) => assert_eq!(c.subject.as_deref(), Some("vip")),
            other => panic!("expected a correlation filter, got {other:?}"),
        }
        match &listed[1].filters {
            ClientRuleFilter::Sql(f) => assert_eq!(f.expression, "priority > 5"),
            other => panic!("expected a SQL filter, got {other:?}"),
        }

        // The new rules route: only the VIP message reaches the subscription.
        let mut s = sender(&mut client, "events").await;
        s.send_message(with_subject("regular", "normal"))
            .await
            .unwrap();
        s.send_message(with_subject("gold", "vip")).await.unwrap();
        let mut r = subscription_receiver(&mut client, "events", "s1", SubQueue::None).await;
        assert_eq!(body(&receive_one(&mut r).await), "gold");
        assert_empty(&mut r, Duration::from_millis(300)).await;

        rules.delete_rule("vip").await.unwrap();
        let error = format!(
            "{:?}",
            rules.delete_rule("vip").await.expect_err("already removed")
        );
        assert!(
            error.contains("404"),
            "removing a missing rule is 404: {error}"
        );
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_to_moves_messages_to_the_target_queue() {
    within(async {
        let emulator = start(
            Emulator::builder()
                .queue(QueueConfig::new("inbox").forward_to("archive"))
                .queue(QueueConfig::new("archive"))
                .topic(TopicConfig::new("events").subscription(
                    SubscriptionConfig::new("to-archive").properties(
                        busway_sb_emulator::EntityProperties {
                            forward_to: Some("archive".into()),
                            ..Default::default()
                        },
                    ),
                )),
        )
        .await;
        let mut client = connect(&emulator).await;
        let mut inbox = sender(&mut client, "inbox").await;
        inbox
            .send_message(ServiceBusMessage::new("via queue"))
            .await
            .unwrap();
        let mut events = sender(&mut client, "events").await;
        events
            .send_message(ServiceBusMessage::new("via topic"))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "archive", ServiceBusReceiveMode::PeekLock).await;
        let mut got = vec![
            body(&receive_one(&mut r).await),
            body(&receive_one(&mut r).await),
        ];
        got.sort();
        assert_eq!(got, ["via queue", "via topic"]);
        assert_eq!(emulator.message_counts("inbox"), Some((0, 0)));
        assert_eq!(
            emulator.message_counts("events/Subscriptions/to-archive"),
            Some((0, 0))
        );
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_messages_are_forwarded_with_their_source() {
    within(async {
        let emulator = start(
            Emulator::builder()
                .queue(QueueConfig::new("work").forward_dead_lettered_messages_to("errors"))
                .queue(QueueConfig::new("errors")),
        )
        .await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "work").await;
        s.send_message(ServiceBusMessage::new("broken"))
            .await
            .unwrap();
        let mut r = receiver(&mut client, "work", ServiceBusReceiveMode::PeekLock).await;
        let m = receive_one(&mut r).await;
        r.dead_letter_message(
            &m,
            azservicebus::receiver::DeadLetterOptions {
                dead_letter_reason: Some("Broken".into()),
                dead_letter_error_description: None,
                properties_to_modify: None,
            },
        )
        .await
        .unwrap();
        let mut errors = receiver(&mut client, "errors", ServiceBusReceiveMode::PeekLock).await;
        let forwarded = receive_one(&mut errors).await;
        assert_eq!(body(&forwarded), "broken");
        assert_eq!(forwarded.dead_letter_source(), Some("work"));
        assert_eq!(forwarded.dead_letter_reason(), Some("Broken"));
        assert_eq!(emulator.message_counts("work"), Some((0, 0)));
        emulator.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_dead_letter_queue_and_duplicate_detection_at_the_topic() {
    within(async {
        let topic = TopicConfig::new("events")
            .duplicate_detection(Duration::from_secs(5))
            .subscription(SubscriptionConfig::new("s1").properties(
                busway_sb_emulator::EntityProperties {
                    max_delivery_count: 1,
                    ..Default::default()
                },
            ));
        let emulator = start(Emulator::builder().topic(topic)).await;
        let mut client = connect(&emulator).await;
        let mut s = sender(&mut client, "events").await;
        for _ in 0..2 {
            let mut m = ServiceBusMessage::new("once");
            m.set_message_id("evt-1").unwrap();
            s.send_message(m).await.unwrap();
        }
        let mut r = subscription_receiver(&mut client, "events", "s1", SubQueue::None).await;
        let m = receive_one(&mut r).await;
        r.abandon_message(&m, None).await.unwrap();
        assert_empty(&mut r, Duration::from_millis(300)).await;
        let mut dlq =
            subscription_receiver(&mut client, "events", "s1", SubQueue::DeadLetter).await;
        let dead = receive_one(&mut dlq).await;
        assert_eq!(body(&dead), "once");
        assert_eq!(dead.dead_letter_reason(), Some("MaxDeliveryCountExceeded"));
        assert_empty(&mut dlq, Duration::from_millis(300)).await;
        emulator.shutdown().await;
    })
    .await;
}
