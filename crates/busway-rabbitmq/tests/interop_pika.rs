//! Interoperability with an AMQP client nobody here wrote: Python's pika (installed into a venv
//! by `scripts/brokers/rabbitmq.sh`, which exports its interpreter as `BUSWAY_RABBITMQ_PYTHON`).
//!
//! pika publishes to busway topics (CloudEvents headers, plain native properties, structured
//! mode) and consumes what busway publishes; the CloudEvents attributes must survive both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use busway_core::{Message, Publisher, SubscribeOptions, Subscriber};
use busway_testkit::conformance::support::next_delivery;
use chrono::{TimeZone, Utc};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(20);

fn python() -> String {
    std::env::var("BUSWAY_RABBITMQ_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
        panic!(
            "BUSWAY_RABBITMQ_PYTHON is not set: it names a Python with pika installed. `scripts/test` \
             (scripts/brokers/rabbitmq.sh) creates one under $BUSWAY_CACHE and exports it; or \
             `python3 -m venv v && v/bin/pip install pika` and point the variable at v/bin/python"
        )
    })
}

/// Runs a pika script with the broker URL as `argv[1]` and the topic as `argv[2]`.
fn pika(script: &str, url: &str, topic: &str) -> Child {
    Command::new(python())
        .args(["-c", script, url, topic])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start python")
}

const PUBLISH: &str = r##"
import json, sys, pika
url, topic = sys.argv[1], sys.argv[2]
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.confirm_delivery()
# Binary mode as the CloudEvents AMQP binding spells it.
ch.basic_publish(topic, "py.binary", b"\x00\x01binary\xff", pika.BasicProperties(
    content_type="application/octet-stream",
    delivery_mode=2,
    headers={
        "cloudEvents_specversion": "1.0",
        "cloudEvents_id": "py-1",
        "cloudEvents_source": "urn:python:pika",
        "cloudEvents_type": "py.binary",
        "cloudEvents_subject": "subj",
        "cloudEvents_time": "2026-01-02T03:04:05.123456Z",
        "cloudEvents_dataschema": "urn:schema:1",
        "cloudEvents_partitionkey": "k-1",
        "cloudEvents_tenant": "acme",
        "cloudEvents_retries": 3,
    }), mandatory=True)
# A plain AMQP message: native properties only.
ch.basic_publish(topic, "py.native", b'{"plain": true}', pika.BasicProperties(
    message_id="py-2", type="py.native", content_type="application/json",
    timestamp=1767225600, correlation_id="corr-py", app_id="pika-app", delivery_mode=2), mandatory=True)
# Structured mode.
ch.basic_publish(topic, "py.structured", json.dumps({
    "specversion": "1.0", "id": "py-3", "source": "urn:python:structured", "type": "py.structured",
    "datacontenttype": "application/json", "data": {"n": 3}, "traceparent": "00-abc-def-01"}).encode(),
    pika.BasicProperties(content_type="application/cloudevents+json", delivery_mode=2), mandatory=True)
conn.close()
print("PUBLISHED", flush=True)
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_publishes_to_busway() {
    let url = common::url().await;
    let (config, _) = common::config("pika-in").await;
    let broker = common::connect(config).await;
    let topic = common::unique("pika-in");
    let mut sub = broker
        .subscribe(&topic, "g", SubscribeOptions::default())
        .await
        .unwrap();

    let child = pika(PUBLISH, &url, &topic);
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "pika failed: {out:?}");

    let mut got = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let d = next_delivery(&mut sub, PATIENCE).await;
        assert_eq!(d.decode_error(), None, "{:?}", d.message());
        got.insert(d.message().id().to_owned(), d.message().clone());
        d.ack().await.unwrap();
    }
    let binary = &got["py-1"];
    let expected = Message::from_wire("py-1", "urn:python:pika", "py.binary")
        .subject("subj")
        .time(
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
                + chrono::Duration::microseconds(123_456),
        )
        .dataschema("urn:schema:1")
        .datacontenttype("application/octet-stream")
        .partition_key("k-1")
        .extension("tenant", "acme")
        .extension("retries", "3")
        .data(&b"\x00\x01binary\xff"[..])
        .build()
        .unwrap();
    assert_eq!(binary, &expected);

    let native = &got["py-2"];
    assert_eq!(native.ty(), "py.native");
    assert_eq!(native.source(), "pika-app");
    assert_eq!(native.datacontenttype(), Some("application/json"));
    assert_eq!(native.correlation_id(), Some("corr-py"));
    assert_eq!(native.time(), Utc.timestamp_opt(1_767_225_600, 0).single());
    assert_eq!(native.data().as_ref(), br#"{"plain": true}"#);

    let structured = &got["py-3"];
    assert_eq!(structured.source(), "urn:python:structured");
    assert_eq!(structured.extension("traceparent"), Some("00-abc-def-01"));
    assert_eq!(
        structured.decode_json::<serde_json::Value>().unwrap(),
        serde_json::json!({"n": 3})
    );
}

const CONSUME: &str = r##"
import json, sys, pika
url, topic = sys.argv[1], sys.argv[2]
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
q = ch.queue_declare("", exclusive=True).method.queue
ch.queue_bind(q, topic, "#")
print("READY", flush=True)
for method, props, body in ch.consume(q, inactivity_timeout=20):
    if method is None:
        sys.exit("no message from busway")
    ch.basic_ack(method.delivery_tag)
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (props.headers or {}).items()}
    print(json.dumps({
        "routing_key": method.routing_key,
        "message_id": props.message_id, "type": props.type, "content_type": props.content_type,
        "timestamp": props.timestamp, "correlation_id": props.correlation_id, "app_id": props.app_id,
        "delivery_mode": props.delivery_mode, "headers": headers,
        "body": body.hex(),
    }), flush=True)
    break
conn.close()
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_consumes_from_busway() {
    let url = common::url().await;
    let (config, _) = common::config("pika-out").await;
    let broker = common::connect(config).await;
    let topic = common::unique("pika-out");
    // The exchange exists once a group exists; pika binds its own queue to it.
    drop(
        broker
            .subscribe(&topic, "g", SubscribeOptions::default())
            .await
            .unwrap(),
    );

    let mut child = pika(CONSUME, &url, &topic);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));

    let time = Utc.timestamp_opt(1_767_225_600, 987_000_000).unwrap();
    let message = Message::builder("https://example.com/orders", "com.example.order.shipped")
        .id("busway-1")
        .subject("orders/1")
        .time(time)
        .correlation_id("corr-1")
        .extension("tenant", "acme")
        .json(&serde_json::json!({"order": 1}))
        .unwrap()
        .build()
        .unwrap();
    broker.publish(&topic, message.clone()).await.unwrap();

    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("pika's report");
    let seen: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(child.wait().await.unwrap().success());
    assert_eq!(seen["message_id"], "busway-1");
    assert_eq!(seen["type"], "com.example.order.shipped");
    assert_eq!(seen["routing_key"], "com.example.order.shipped");
    assert_eq!(seen["content_type"], "application/json");
    assert_eq!(seen["timestamp"], 1_767_225_600);
    assert_eq!(seen["correlation_id"], "corr-1");
    assert_eq!(seen["delivery_mode"], 2);
    let headers = &seen["headers"];
    assert_eq!(headers["cloudEvents_specversion"], "1.0");
    assert_eq!(headers["cloudEvents_subject"], "orders/1");
    assert_eq!(headers["cloudEvents_time"], "2026-01-01T00:00:00.987Z");
    assert_eq!(headers["cloudEvents_tenant"], "acme");
    // Every attribute is a header too, so a binding-aware reader gets the whole event.
    assert_eq!(headers["cloudEvents_id"], "busway-1");
    assert_eq!(headers["cloudEvents_type"], "com.example.order.shipped");
    assert_eq!(headers["cloudEvents_source"], "https://example.com/orders");
    assert_eq!(headers["cloudEvents_correlationid"], "corr-1");
    assert!(
        seen["app_id"].is_null(),
        "app_id belongs to the application"
    );
    let hex = seen["body"].as_str().unwrap();
    let body: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(body, message.data().as_ref());
}
