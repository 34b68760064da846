//! Configuration of the Kafka adapter, and its translation into librdkafka properties.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use busway_core::{Error, Result};
use rdkafka::ClientConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Settings of a [`KafkaBroker`](crate::KafkaBroker).
///
/// Deserialised from the `kafka` section of busway's configuration; every field has a default, so
/// `KafkaConfig::default()` talks to a local broker on `127.0.0.1:9092`. `Debug` never shows
/// passwords, neither those of [`security`](Self::security) nor sensitive [`extra`](Self::extra)
/// properties.
///
/// ```no_run
/// use busway_kafka::{KafkaConfig, SaslMechanism, SecurityProtocol};
///
/// let config: KafkaConfig = serde_json::from_str(r#"{
///     "bootstrap_servers": "broker-1:9093,broker-2:9093",
///     "security": {
///         "protocol": "sasl_ssl",
///         "sasl_mechanism": "scram_sha512",
///         "sasl_username": "orders-service",
///         "sasl_password": "s3cret",
///         "ssl_ca_location": "/etc/ssl/kafka-ca.pem"
///     },
///     "create_topics": false
/// }"#).unwrap();
/// assert_eq!(config.security.protocol, SecurityProtocol::SaslSsl);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # let _ = SaslMechanism::Plain;
/// ```
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` of the brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Client id reported to the brokers.
    pub client_id: String,
    /// SASL and TLS settings.
    pub security: SecurityConfig,
    /// Create missing topics (the topic, its retry tiers, scheduled and DLQ topics) through the
    /// admin API. Turn it off when topics are managed elsewhere; they must then exist.
    pub create_topics: bool,
    /// Partitions of topics this adapter creates.
    pub partitions: i32,
    /// Replication factor of topics this adapter creates.
    pub replication_factor: i32,
    /// Largest message accepted by `publish`, in bytes (key, value and headers); bigger messages
    /// fail with [`Error::TooLarge`] before anything is sent. Matches Kafka's `message.max.bytes`.
    pub max_message_bytes: usize,
    /// The Kafka consumer group id of a busway group, with `{group}` and `{topic}` placeholders.
    ///
    /// The default `{group}` uses the busway group name as is, which is what existing Kafka
    /// tooling and lag monitors expect. A busway group is scoped to one topic (as a RabbitMQ
    /// queue or a Service Bus subscription is), while a Kafka group spans every topic its members
    /// read: with `{group}`, consumers of *different* topics under the same group name share one
    /// Kafka group, so each of them joining or leaving rebalances all the others. Use
    /// `{group}.{topic}` to give every topic its own Kafka group.
    pub group_id: String,
    /// Retry topics per group: redelivery after attempt `n` goes to
    /// `<topic>.<group>.retry.<min(n, retry_tiers)>`.
    pub retry_tiers: u32,
    /// How long a publish may wait for its delivery report (`message.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// How often consumers commit the offsets they have finished.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How long `subscribe` waits for the group to assign partitions before returning anyway.
    #[serde(with = "humantime_serde")]
    pub join_timeout: Duration,
    /// Timeout of metadata, watermark, offset and admin requests.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// After closing, how long a consumer waits for deliveries still being handled before it
    /// leaves the group without them (they are redelivered to the next member).
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// How long the runtime may stop pulling (e.g. an open circuit breaker) before the assigned
    /// partitions are paused instead of buffering more.
    #[serde(with = "humantime_serde")]
    pub pause_after: Duration,
    /// Raw librdkafka properties applied to every client, last (they override busway's choices).
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "busway".into(),
            security: SecurityConfig::default(),
            create_topics: true,
            partitions: 3,
            replication_factor: 1,
            max_message_bytes: 1024 * 1024,
            group_id: "{group}".into(),
            retry_tiers: 3,
            delivery_timeout: Duration::from_secs(30),
            commit_interval: Duration::from_millis(500),
            join_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(30),
            pause_after: Duration::from_millis(500),
            extra: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra: BTreeMap<&str, &str> = self
            .extra
            .iter()
            .map(|(k, v)| {
                let shown = if is_sensitive(k) {
                    "[REDACTED]"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field("security", &self.security)
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("group_id", &self.group_id)
            .field("retry_tiers", &self.retry_tiers)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("commit_interval", &self.commit_interval)
            .field("join_timeout", &self.join_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("pause_after", &self.pause_after)
            .field("extra", &extra)
            .finish()
    }
}

/// librdkafka property names whose values are secrets.
fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "key.pem",
        "keystore",
        "credentials",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// How clients talk to the brokers (`security.protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    #[default]
    Plaintext,
    /// TLS without SASL.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }
}

/// SASL mechanism (`sasl.mechanism`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaslMechanism {
    /// `PLAIN`.
    #[default]
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL and TLS settings, passed through to librdkafka.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// `security.protocol`.
    pub protocol: SecurityProtocol,
    /// `sasl.mechanism`, used with the SASL protocols.
    pub sasl_mechanism: SaslMechanism,
    /// `sasl.username`.
    pub sasl_username: Option<String>,
    /// `sasl.password`; never shown by `Debug`.
    pub sasl_password: Option<SecretString>,
    /// `ssl.ca.location`: CA certificate(s) to verify the brokers with.
    pub ssl_ca_location: Option<PathBuf>,
    /// `ssl.certificate.location`: client certificate for mutual TLS.
    pub ssl_certificate_location: Option<PathBuf>,
    /// `ssl.key.location`: client private key for mutual TLS.
    pub ssl_key_location: Option<PathBuf>,
    /// `ssl.key.password`; never shown by `Debug`.
    pub ssl_key_password: Option<SecretString>,
}

impl KafkaConfig {
    /// Checks the values that librdkafka would only reject later, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::config(
                "kafka.bootstrap_servers",
                "must not be empty",
            ));
        }
        if self.partitions < 1 {
            return Err(Error::config("kafka.partitions", "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(Error::config(
                "kafka.replication_factor",
                "must be at least 1",
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(Error::config("kafka.max_message_bytes", "must be positive"));
        }
        if !self.group_id.contains("{group}") {
            return Err(Error::config(
                "kafka.group_id",
                "must contain `{group}` (busway groups would otherwise share one Kafka group)",
            ));
        }
        if self.retry_tiers == 0 {
            return Err(Error::config("kafka.retry_tiers", "must be at least 1"));
        }
        let sasl = matches!(
            self.security.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        if sasl && (self.security.sasl_username.is_none() || self.security.sasl_password.is_none())
        {
            return Err(Error::config(
                "kafka.security",
                "the SASL protocols need sasl_username and sasl_password",
            ));
        }
        Ok(())
    }

    /// Properties shared by producers, consumers and admin clients.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            .set("security.protocol", self.security.protocol.as_str())
            .set("socket.keepalive.enable", "true")
            // Newly created topics and partitions are noticed within seconds, not minutes.
            .set("topic.metadata.refresh.interval.ms", "10000");
        let s = &self.security;
        if matches!(
            s.protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        ) {
            c.set("sasl.mechanism", s.sasl_mechanism.as_str());
            if let Some(user) = &s.sasl_username {
                c.set("sasl.username", user);
            }
            if let Some(password) = &s.sasl_password {
                c.set("sasl.password", password.expose_secret());
            }
        }
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        if let Some(p) = &s.ssl_ca_location {
            c.set("ssl.ca.location", path(p));
        }
        if let Some(p) = &s.ssl_certificate_location {
            c.set("ssl.certificate.location", path(p));
        }
        if let Some(p) = &s.ssl_key_location {
            c.set("ssl.key.location", path(p));
        }
        if let Some(p) = &s.ssl_key_password {
            c.set("ssl.key.password", p.expose_secret());
        }
        // librdkafka logs go through `tracing` only at warning level and above.
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        c
    }

    /// Applies [`extra`](Self::extra) last, so users can override anything.
    pub(crate) fn with_extra(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    pub(crate) fn producer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        // The protocol limit must leave room for the record framing around our own check.
        let protocol_max = (self.max_message_bytes + 64 * 1024).max(1_000_000);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", millis(self.delivery_timeout))
            .set("message.max.bytes", protocol_max.to_string())
            .set("linger.ms", "5");
        self.with_extra(c)
    }

    /// The Kafka group id of busway group `group` on `topic`, from [`group_id`](Self::group_id).
    pub fn kafka_group_id(&self, topic: &str, group: &str) -> String {
        self.group_id
            .replace("{topic}", topic)
            .replace("{group}", group)
    }

    pub(crate) fn consumer_config(&self, topic: &str, group: &str) -> ClientConfig {
        let mut c = self.client_config();
        let fetch_max = (self.max_message_bytes + 64 * 1024).max(1_048_576);
        c.set("group.id", self.kafka_group_id(topic, group))
            // busway commits itself: only offsets whose deliveries are settled, contiguously.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Range balances each topic on its own: every member gets a share of the topic
            // itself, not just of its retry tiers (cooperative-sticky balances totals only).
            // Rebalances are eager; partitions that come back unchanged keep their in-flight
            // work (see the consumer's rebalance handling).
            .set("partition.assignment.strategy", "range")
            .set("allow.auto.create.topics", "false")
            .set("fetch.wait.max.ms", "100")
            .set("max.partition.fetch.bytes", fetch_max.to_string())
            // Bounds what librdkafka prefetches while the runtime is not pulling.
            .set("queued.max.messages.kbytes", "16384");
        self.with_extra(c)
    }

    pub(crate) fn plain_consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100");
        self.with_extra(c)
    }

    pub(crate) fn admin_config(&self) -> ClientConfig {
        let c = self.client_config();
        self.with_extra(c)
    }
}

pub(crate) fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_redacts_every_secret() {
        let mut config = KafkaConfig::default();
        config.security.sasl_password = Some(SecretString::from("hunter2"));
        config.security.ssl_key_password = Some(SecretString::from("keypass"));
        config.extra.insert(
            "sasl.oauthbearer.client.secret".into(),
            "oauth-secret".into(),
        );
        config.extra.insert("linger.ms".into(), "7".into());
        let shown = format!("{config:?}");
        for secret in ["hunter2", "keypass", "oauth-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("linger.ms"), "{shown}");
    }

    #[test]
    fn deserialises_with_defaults_and_rejects_unknown_fields() {
        let config: KafkaConfig = serde_json::from_str(
            r#"{"bootstrap_servers":"b:9092","security":{"protocol":"sasl_ssl","sasl_mechanism":"scram_sha256",
                "sasl_username":"u","sasl_password":"p"},"commit_interval":"2s"}"#,
        )
        .unwrap();
        assert_eq!(config.commit_interval, Duration::from_secs(2));
        assert_eq!(config.partitions, 3);
        config.validate().unwrap();
        let c = config.producer_config();
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(c.get("sasl.password"), Some("p"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert!(serde_json::from_str::<KafkaConfig>(r#"{"bootstrap":"x"}"#).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let config = KafkaConfig {
            security: SecurityConfig {
                protocol: SecurityProtocol::SaslPlaintext,
                ..SecurityConfig::default()
            },
            ..KafkaConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("kafka.security"), "{err}");
        let config = KafkaConfig {
            bootstrap_servers: " ".into(),
            ..KafkaConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("bootstrap_servers")
        );
    }

    #[test]
    fn extra_overrides_busway_defaults() {
        let mut config = KafkaConfig::default();
        config.extra.insert("acks".into(), "1".into());
        assert_eq!(config.producer_config().get("acks"), Some("1"));
    }

    #[test]
    fn group_id_template_scopes_kafka_groups() {
        let mut config = KafkaConfig::default();
        assert_eq!(config.kafka_group_id("orders", "billing"), "billing");
        config.group_id = "{group}.{topic}".into();
        assert_eq!(config.kafka_group_id("orders", "billing"), "billing.orders");
        assert_eq!(
            config.consumer_config("orders", "billing").get("group.id"),
            Some("billing.orders")
        );
        config.group_id = "prod.{topic}".into();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("kafka.group_id"), "{err}");
    }
}
