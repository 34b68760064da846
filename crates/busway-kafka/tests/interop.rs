//! Interop with a Kafka client nobody here wrote: Python's confluent-kafka and the official
//! CloudEvents SDK for Python (installed by `scripts/test`, path in `BUSWAY_KAFKA_PYTHON`).
//! busway reads the CloudEvents they produce, in binary and structured mode, and they read
//! busway's, attributes intact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use busway_core::{Message, Publisher, StartPosition, SubscribeOptions, Subscriber};
use busway_testkit::conformance::support::{next_delivery, unique};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn python() -> String {
    std::env::var("BUSWAY_KAFKA_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
        panic!(
            "the interop test needs Python with confluent-kafka: set BUSWAY_KAFKA_PYTHON (scripts/test \
             installs one into a venv under $BUSWAY_CACHE and exports it)"
        )
    })
}

fn script() -> String {
    format!("{}/tests/interop.py", env!("CARGO_MANIFEST_DIR"))
}

fn b64(bytes: &[u8]) -> String {
    // Tiny encoder: the test needs no dependency for it.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for c in clean.chunks(4) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(val(b)) << (18 - 6 * i)));
        for i in 0..c.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_python_reads_ours_and_we_read_theirs() {
    let python = python();
    let broker = common::shared_broker().await;
    let bootstrap = broker.config().bootstrap_servers.clone();

    // Python -> busway.
    let theirs = unique("interop-in");
    let mut sub = broker
        .subscribe(
            &theirs,
            "busway",
            SubscribeOptions::default().start(StartPosition::Earliest),
        )
        .await
        .expect("subscribe");
    let records = json!([
        {
            "key": "customer-42",
            "value_b64": b64(br#"{"order":7}"#),
            "headers": [
                ["ce_specversion", "1.0"], ["ce_id", "py-1"], ["ce_source", "urn:python"],
                ["ce_type", "com.example.order.placed"], ["ce_subject", "orders/7"],
                ["ce_time", "2026-01-01T00:00:00.5Z"], ["ce_partitionkey", "customer-42"],
                ["ce_traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
                ["content-type", "application/json"]
            ]
        },
        {
            "key": null,
            "value_b64": b64(&[0, 1, 2, 255]),
            "headers": [
                ["ce_specversion", "1.0"], ["ce_id", "py-2"], ["ce_source", "urn:python"],
                ["ce_type", "bytes"], ["content-type", "application/octet-stream"]
            ]
        },
        {
            "key": null,
            "value_b64": b64(br#"{"specversion":"1.0","id":"py-3","source":"urn:python","type":"structured","datacontenttype":"text/plain","data":"hello"}"#),
            "headers": [["content-type", "application/cloudevents+json; charset=utf-8"]]
        }
    ]);
    let mut child = Command::new(&python)
        .args([script().as_str(), "produce", &bootstrap, &theirs])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(records.to_string().as_bytes())
        .await
        .unwrap();
    assert!(
        child.wait().await.unwrap().success(),
        "python producer failed"
    );
    let mut got = HashMap::new();
    for _ in 0..3 {
        let d = next_delivery(&mut sub, Duration::from_secs(60)).await;
        assert!(d.decode_error().is_none(), "{:?}", d.decode_error());
        got.insert(d.message().id().to_owned(), d.message().clone());
        d.ack().await.unwrap();
    }
    let first = &got["py-1"];
    assert_eq!(first.source(), "urn:python");
    assert_eq!(first.ty(), "com.example.order.placed");
    assert_eq!(first.subject(), Some("orders/7"));
    assert_eq!(
        first.time(),
        Utc.timestamp_opt(1_767_225_600, 500_000_000).single()
    );
    assert_eq!(first.partition_key(), Some("customer-42"));
    assert_eq!(
        first.extension("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(first.datacontenttype(), Some("application/json"));
    assert_eq!(first.data().as_ref(), br#"{"order":7}"#);
    assert_eq!(got["py-2"].data().as_ref(), &[0, 1, 2, 255]);
    assert_eq!(got["py-3"].data().as_ref(), b"hello");
    assert_eq!(got["py-3"].datacontenttype(), Some("text/plain"));
    sub.close().await.unwrap();

    // busway -> Python.
    let ours = unique("interop-out");
    let sent = Message::builder("https://example.com/shop", "com.example.shipped.v1")
        .subject("parcel/9")
        .partition_key("customer-9")
        .correlation_id("corr-9")
        .extension("tenant", "acme")
        .json(&json!({"parcel": 9, "text": "grüße"}))
        .unwrap()
        .build()
        .unwrap();
    broker.publish(&ours, sent.clone()).await.expect("publish");
    let output = Command::new(&python)
        .args([script().as_str(), "consume", &bootstrap, &ours, "1"])
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "python consumer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Vec<Value> = serde_json::from_slice(&output.stdout).expect("python output");
    assert_eq!(read.len(), 1, "python read {read:?}");
    let rec = &read[0];
    let headers: HashMap<String, String> = rec["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_owned(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(rec["key"], "customer-9");
    assert_eq!(
        unb64(rec["value_b64"].as_str().unwrap()),
        sent.data().to_vec()
    );
    assert_eq!(headers["ce_specversion"], "1.0");
    assert_eq!(headers["ce_id"], sent.id());
    assert_eq!(headers["ce_source"], "https://example.com/shop");
    assert_eq!(headers["ce_type"], "com.example.shipped.v1");
    assert_eq!(headers["ce_subject"], "parcel/9");
    assert_eq!(headers["ce_time"], sent.time_rfc3339().unwrap());
    assert_eq!(headers["ce_partitionkey"], "customer-9");
    assert_eq!(headers["ce_correlationid"], "corr-9");
    assert_eq!(headers["ce_tenant"], "acme");
    assert_eq!(headers["content-type"], "application/json");
}

/// Runs interop.py in `mode` on `topic` with `input` on stdin; returns its JSON output.
async fn run_python(
    mode: &str,
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
    input: &str,
) -> Value {
    let mut child = Command::new(python())
        .args([script().as_str(), mode, bootstrap, topic])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "python {mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python output")
}

/// The official SDK's Kafka binding moves `partitionkey` to the record key and writes no
/// `ce_partitionkey` header: busway reads the key as the partition key, and the SDK reads
/// busway's records back with theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_and_busway_agree_on_the_partition_key() {
    let broker = common::shared_broker().await;
    let bootstrap = broker.config().bootstrap_servers.clone();

    // SDK -> busway.
    let theirs = unique("interop-sdk-in");
    let mut sub = broker
        .subscribe(
            &theirs,
            "busway",
            SubscribeOptions::default().start(StartPosition::Earliest),
        )
        .await
        .expect("subscribe");
    let events = json!([{
        "attributes": {
            "specversion": "1.0", "id": "sdk-1", "source": "urn:python-sdk",
            "type": "com.example.order.placed", "subject": "orders/77",
            "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
            "partitionkey": "customer-77"
        },
        "data_b64": b64(br#"{"order":77}"#)
    }]);
    let produced = run_python("produce-sdk", &bootstrap, &theirs, &[], &events.to_string()).await;
    let record = &produced[0];
    assert_eq!(
        record["key"], "customer-77",
        "the SDK puts the partition key in the key"
    );
    assert!(
        record["headers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h[0] != "ce_partitionkey"),
        "this case needs a record without a ce_partitionkey header: {record}"
    );
    let d = next_delivery(&mut sub, Duration::from_secs(60)).await;
    assert!(d.decode_error().is_none(), "{:?}", d.decode_error());
    let m = d.message().clone();
    d.ack().await.unwrap();
    assert_eq!(m.id(), "sdk-1");
    assert_eq!(m.partition_key(), Some("customer-77"));
    assert_eq!(m.subject(), Some("orders/77"));
    assert_eq!(m.datacontenttype(), Some("application/json"));
    assert_eq!(m.data().as_ref(), br#"{"order":77}"#);
    sub.close().await.unwrap();

    // busway -> SDK, the message the SDK wrote included: published again by busway, the SDK
    // reads the same attributes.
    let ours = unique("interop-sdk-out");
    let sent = Message::builder("https://example.com/shop", "com.example.shipped.v1")
        .partition_key("customer-9")
        .json(&json!({"parcel": 9}))
        .unwrap()
        .build()
        .unwrap();
    broker.publish(&ours, sent.clone()).await.expect("publish");
    broker.publish(&ours, m.clone()).await.expect("publish");
    let read = run_python("consume-sdk", &bootstrap, &ours, &["2"], "").await;
    let read = read.as_array().unwrap();
    assert_eq!(read.len(), 2, "the SDK read {read:?}");
    let by_id: HashMap<&str, &Value> = read
        .iter()
        .map(|e| (e["attributes"]["id"].as_str().unwrap(), &e["attributes"]))
        .collect();
    assert_eq!(by_id[sent.id()]["partitionkey"], "customer-9");
    assert_eq!(by_id[sent.id()]["type"], "com.example.shipped.v1");
    assert_eq!(by_id["sdk-1"]["partitionkey"], "customer-77");
    assert_eq!(by_id["sdk-1"]["subject"], "orders/77");
}

#[test]
fn base64_helpers_round_trip() {
    for input in [&b""[..], b"a", b"ab", b"abc", b"\x00\xff\x10\x80"] {
        assert_eq!(unb64(&b64(input)), input);
    }
    assert_eq!(b64(b"hello"), "aGVsbG8=");
}
