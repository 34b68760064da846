//! The shared idempotent producer and the admin client that creates topics.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use busway_core::{Error, Result};
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use crate::codec::OutRecord;
use crate::config::KafkaConfig;
use crate::error::{classify, creating};

/// An idempotent producer (acks=all) that replaces itself after a fatal error.
///
/// Idempotence makes librdkafka's internal retries duplicate-free; a fatal idempotence error
/// (e.g. the broker lost the producer's sequence state) leaves a producer unusable, so the next
/// send gets a fresh one.
pub(crate) struct Producer {
    config: Arc<KafkaConfig>,
    inner: RwLock<Arc<FutureProducer>>,
}

impl Producer {
    pub(crate) fn new(config: Arc<KafkaConfig>) -> Result<Self> {
        let inner = create(&config)?;
        Ok(Self {
            config,
            inner: RwLock::new(Arc::new(inner)),
        })
    }

    fn current(&self) -> Arc<FutureProducer> {
        match self.inner.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sends one record and waits for its delivery report.
    pub(crate) async fn send(&self, topic: &str, record: OutRecord) -> Result<()> {
        let producer = self.current();
        let OutRecord {
            key,
            value,
            headers,
            ..
        } = record;
        let result = producer
            .send(
                future_record(topic, key.as_deref(), &value, headers),
                Timeout::After(self.config.delivery_timeout),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                self.recover(&producer);
                Err(classify(&format!("publishing to {topic}"), e))
            }
        }
    }

    /// Sends every record at once and waits for every delivery report; the first error wins.
    pub(crate) async fn send_all(&self, topic: &str, records: Vec<OutRecord>) -> Result<()> {
        let producer = self.current();
        let timeout = Timeout::After(self.config.delivery_timeout);
        // Headers move into librdkafka; keys and values are borrowed until the reports arrive.
        let (bodies, headers): (Vec<_>, Vec<_>) = records
            .into_iter()
            .map(|r| ((r.key, r.value), r.headers))
            .unzip();
        let sends = bodies.iter().zip(headers).map(|((key, value), headers)| {
            producer.send(
                future_record(topic, key.as_deref(), value, headers),
                timeout,
            )
        });
        let mut first_error = None;
        for result in join_all(sends).await {
            if let (Err((e, _)), None) = (result, &first_error) {
                first_error = Some(classify(&format!("publishing to {topic}"), e));
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => {
                self.recover(&producer);
                Err(e)
            }
        }
    }

    /// Swaps in a new producer when `failed` hit a fatal error.
    fn recover(&self, failed: &Arc<FutureProducer>) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        tracing::warn!(?code, %reason, "producer hit a fatal error; creating a new one");
        match create(&self.config) {
            Ok(fresh) => {
                let mut guard = match self.inner.write() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if Arc::ptr_eq(&guard, failed) {
                    *guard = Arc::new(fresh);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot recreate the producer"),
        }
    }

    /// Waits until everything queued is delivered (used on shutdown paths).
    pub(crate) fn flush(&self) {
        let _ = self
            .current()
            .flush(Timeout::After(self.config.delivery_timeout));
    }
}

fn create(config: &KafkaConfig) -> Result<FutureProducer> {
    config
        .producer_config()
        .create()
        .map_err(|e| creating(config, "creating the producer", e))
}

fn future_record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: &'a [u8],
    headers: rdkafka::message::OwnedHeaders,
) -> FutureRecord<'a, [u8], [u8]> {
    let fr = FutureRecord::<[u8], [u8]>::to(topic)
        .payload(value)
        .headers(headers);
    match key {
        Some(key) => fr.key(key),
        None => fr,
    }
}

/// Creates topics on first use when the configuration asks for it.
pub(crate) struct Topics {
    config: Arc<KafkaConfig>,
    admin: AdminClient<DefaultClientContext>,
    known: Mutex<HashSet<String>>,
}

impl Topics {
    pub(crate) fn new(config: Arc<KafkaConfig>) -> Result<Self> {
        let admin = config
            .admin_config()
            .create()
            .map_err(|e| creating(&config, "creating the admin client", e))?;
        Ok(Self {
            config,
            admin,
            known: Mutex::new(HashSet::new()),
        })
    }

    fn is_known(&self, topic: &str) -> bool {
        self.known
            .lock()
            .map(|k| k.contains(topic))
            .unwrap_or(false)
    }

    /// Makes sure each `(topic, partitions)` exists, when topic creation is on.
    pub(crate) async fn ensure(&self, topics: &[(String, i32)]) -> Result<()> {
        if !self.config.create_topics {
            return Ok(());
        }
        let missing: Vec<&(String, i32)> =
            topics.iter().filter(|(t, _)| !self.is_known(t)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|(t, p)| {
                NewTopic::new(
                    t,
                    *p,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(self.config.request_timeout))
            .operation_timeout(Some(self.config.request_timeout));
        let results = self
            .admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|e| classify("creating topics", e))?;
        for result in results {
            match result {
                Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    if let Ok(mut known) = self.known.lock() {
                        known.insert(topic);
                    }
                }
                Err((topic, code)) => {
                    return Err(Error::broker(
                        format!("creating topic {topic} failed: {code}"),
                        false,
                        rdkafka::error::KafkaError::AdminOp(code),
                    ));
                }
            }
        }
        Ok(())
    }
}
