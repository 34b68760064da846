//! The producer process: publishes numbered messages and records each one the broker confirmed.

use std::path::PathBuf;
use std::time::Duration;

use busway::{Bus, Message};

use crate::RunError;
use crate::ledger::Ledger;

/// What the producer sends.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    /// The topic.
    pub topic: String,
    /// Numbers `start..start + count` are sent.
    pub start: u64,
    /// How many.
    pub count: u64,
    /// Messages per `publish_batch`.
    pub batch: usize,
    /// Where confirmed numbers are recorded.
    pub ledger: PathBuf,
    /// Distinct partition keys (per-key order is checked by nobody here, but keyed messages take
    /// the brokers' keyed paths).
    pub keys: u64,
}

/// The message numbered `n`: its id is derived from the number, so a re-publish after a lost
/// confirm carries the same id (what consumer-side dedup keys on).
pub fn message(n: u64, keys: u64) -> Result<Message, busway::Error> {
    Message::builder("/busway/reliability", "busway.reliability.numbered")
        .id(format!("reliability-{n}"))
        .partition_key(format!("key-{}", n % keys.max(1)))
        .json(&serde_json::json!({ "n": n }))?
        .build()
}

/// The number a message carries.
pub fn number_of(message: &Message) -> Option<u64> {
    let value: serde_json::Value = message.decode_json().ok()?;
    value.get("n")?.as_u64()
}

/// Publishes every number once confirmed, retrying a failed batch whole (the broker was down or
/// the connection cut: the same ids go again, so a batch may arrive twice, never not at all).
pub async fn produce(bus: &Bus, options: &ProduceOptions) -> Result<(), RunError> {
    let mut ledger = Ledger::open(&options.ledger).await?;
    let end = options.start + options.count;
    let mut next = options.start;
    let mut failures = 0u32;
    while next < end {
        let upto = (next + options.batch as u64).min(end);
        let numbers: Vec<u64> = (next..upto).collect();
        let messages = numbers
            .iter()
            .map(|n| message(*n, options.keys))
            .collect::<Result<Vec<_>, _>>()?;
        match bus
            .publisher()
            .publish_batch(&options.topic, messages)
            .await
        {
            Ok(()) => {
                ledger.append(&numbers).await?;
                next = upto;
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, from = next, failures, "publishing failed; sending the batch again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20)))).await;
            }
        }
    }
    Ok(())
}
