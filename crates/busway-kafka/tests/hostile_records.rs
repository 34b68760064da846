//! Records no well-behaved client writes, produced byte by byte with a minimal Kafka Produce
//! request (v3, one record batch of magic 2): the consumer must read on, never panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use busway_core::{
    DeadLetterMetadata, DeadLetterReason, DeadLetters, Publisher, Settlement, StartPosition,
    SubscribeOptions, Subscriber,
};
use busway_testkit::conformance::support::{next_delivery, numbered, unique};
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(60);

/// Appends `v` as a zig-zag varint (the record format's integers).
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn varbytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint(out, -1),
        Some(b) => {
            varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// CRC-32C (Castagnoli), as record batches carry it.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A record batch holding one record with these key, value and raw headers.
fn record_batch(key: &[u8], value: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    varint(&mut body, 0); // timestamp delta
    varint(&mut body, 0); // offset delta
    varbytes(&mut body, Some(key));
    varbytes(&mut body, Some(value));
    varint(&mut body, headers.len() as i64);
    for (name, value) in headers {
        varbytes(&mut body, Some(name));
        varbytes(&mut body, Some(value));
    }
    let mut record = Vec::new();
    varint(&mut record, body.len() as i64);
    record.extend_from_slice(&body);

    let now = Utc::now().timestamp_millis();
    let mut after_crc = Vec::new();
    after_crc.extend_from_slice(&0i16.to_be_bytes()); // attributes
    after_crc.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    after_crc.extend_from_slice(&now.to_be_bytes()); // first timestamp
    after_crc.extend_from_slice(&now.to_be_bytes()); // max timestamp
    after_crc.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    after_crc.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    after_crc.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    after_crc.extend_from_slice(&1i32.to_be_bytes()); // records
    after_crc.extend_from_slice(&record);

    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&((4 + 1 + 4 + after_crc.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c(&after_crc).to_be_bytes());
    batch.extend_from_slice(&after_crc);
    batch
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Produces `batch` to partition 0 of `topic` on the broker at `addr` (which must lead it);
/// returns the partition's error code.
async fn produce_raw(addr: &str, topic: &str, batch: &[u8]) -> i16 {
    let mut request = Vec::new();
    request.extend_from_slice(&0i16.to_be_bytes()); // Produce
    request.extend_from_slice(&3i16.to_be_bytes()); // version 3
    request.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    string(&mut request, "busway-hostile");
    request.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    request.extend_from_slice(&(-1i16).to_be_bytes()); // acks: all
    request.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    request.extend_from_slice(&1i32.to_be_bytes()); // one topic
    string(&mut request, topic);
    request.extend_from_slice(&1i32.to_be_bytes()); // one partition
    request.extend_from_slice(&0i32.to_be_bytes()); // partition 0
    request.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    request.extend_from_slice(batch);

    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the broker");
    stream
        .write_all(&(request.len() as i32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&request).await.unwrap();
    let size = stream.read_i32().await.unwrap();
    let mut response = vec![0u8; size as usize];
    stream.read_exact(&mut response).await.unwrap();
    // correlation id, topic count, topic name, partition count, partition index, error code
    let mut at = 4 + 4;
    let name_len = i16::from_be_bytes([response[at], response[at + 1]]) as usize;
    at += 2 + name_len + 4 + 4;
    i16::from_be_bytes([response[at], response[at + 1]])
}

/// A header name that is not UTF-8 (rdkafka 0.39 unwraps that check): the record is delivered,
/// its CloudEvent intact, and can be dead-lettered; the consumer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_does_not_stop_the_consumer() {
    let broker = common::shared_broker().await;
    let bootstrap = broker.config().bootstrap_servers.clone();
    let topic = unique("hostile");
    let group = "g";
    let mut sub = broker
        .subscribe(
            &topic,
            group,
            SubscribeOptions::default().start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let batch = record_batch(
        b"k",
        b"{}",
        &[
            (b"ce_specversion", b"1.0"),
            (b"ce_id", b"hostile-1"),
            (b"ce_source", b"urn:hostile"),
            (b"ce_type", b"t"),
            (b"x-\xff\xfe-name", b"v"),
            (b"x-origin", b"legacy"),
        ],
    );
    assert_eq!(
        produce_raw(&bootstrap, &topic, &batch).await,
        0,
        "the broker took it"
    );
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(d.message().id(), "hostile-1");
    assert!(d.decode_error().is_none(), "{:?}", d.decode_error());
    assert_eq!(d.message().partition_key(), Some("k"));
    d.settle(Settlement::DeadLetter(Box::new(DeadLetterMetadata {
        reason: DeadLetterReason::PermanentError,
        error: "hostile".into(),
        original_topic: topic.clone(),
        group: group.into(),
        attempts: 1,
        first_failure: Utc::now(),
        last_failure: Utc::now(),
    })))
    .await
    .expect("the record can be dead-lettered");
    let sentinel = numbered(1);
    broker.publish(&topic, sentinel.clone()).await.unwrap();
    let d = next_delivery(&mut sub, PATIENCE).await;
    assert_eq!(d.message().id(), sentinel.id(), "the consumer went on");
    d.ack().await.unwrap();
    sub.close().await.unwrap();
    let dead = broker.peek(&topic, group, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message.id(), "hostile-1");
}
