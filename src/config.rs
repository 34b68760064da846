//! `BusConfig`: which broker, its settings, and consumer defaults, from a TOML file and `BUSWAY_*`
//! environment variables.

use std::path::Path;
use std::time::Duration;

use busway_core::{CircuitBreakerConfig, Error, RedeliveryPolicy, Result, RetryPolicy};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

/// The file [`BusConfig::load`] reads when `BUSWAY_CONFIG` names none.
pub const DEFAULT_CONFIG_FILE: &str = "busway.toml";

/// Which broker the bus connects to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// The in-process broker (no setup; messages live as long as the process).
    #[default]
    Memory,
    /// RabbitMQ (feature `rabbitmq`).
    RabbitMq,
    /// Kafka (feature `kafka`).
    Kafka,
    /// Azure Service Bus (feature `servicebus`).
    ServiceBus,
}

impl BrokerKind {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::RabbitMq => "rabbitmq",
            Self::Kafka => "kafka",
            Self::ServiceBus => "servicebus",
        }
    }
}

/// Defaults applied to every consumer made with [`Bus::consumer`](crate::Bus::consumer).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerDefaults {
    /// Deliveries handled at once.
    pub concurrency: usize,
    /// In-process retries.
    pub retry: RetryPolicy,
    /// Broker redeliveries before dead-lettering.
    pub redelivery: RedeliveryPolicy,
    /// Limit per handler attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Circuit breaker, off when absent.
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// How long shutdown waits for in-flight handlers.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Run each message's handler once per group (the dedup middleware), off when absent.
    pub dedup: Option<DedupConfig>,
}

/// Where the dedup middleware records processed message ids.
///
/// ```toml
/// [consumer.dedup]
/// store = "memory"
/// capacity = 100000
/// ttl = "24h"
/// ```
///
/// `ttl` must outlive the consumer's longest redelivery window
/// ([`RedeliveryPolicy::longest_window`]), or a late redelivery would not be recognised; a
/// shorter one is refused when the bus connects.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "store", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum DedupConfig {
    /// In process memory: one process's consumers only, forgotten on restart.
    Memory {
        /// Ids remembered at most; the oldest are forgotten first.
        #[serde(default = "default_dedup_capacity")]
        capacity: usize,
        /// How long a processed id is remembered.
        #[serde(default = "default_dedup_ttl", with = "humantime_serde")]
        ttl: Duration,
        /// How long a claim by a consumer that crashed mid-message blocks others.
        #[serde(default = "default_dedup_lease", with = "humantime_serde")]
        lease: Duration,
    },
}

fn default_dedup_capacity() -> usize {
    100_000
}
fn default_dedup_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_dedup_lease() -> Duration {
    Duration::from_secs(300)
}

impl DedupConfig {
    /// Checks the retention against the redelivery window, naming the setting.
    pub fn validate(&self, redelivery: &RedeliveryPolicy) -> Result<()> {
        match self {
            Self::Memory { capacity, ttl, .. } => {
                if *capacity == 0 {
                    return Err(Error::config(
                        "consumer.dedup.capacity",
                        "must be at least 1",
                    ));
                }
                let window = redelivery.longest_window();
                if *ttl <= window {
                    return Err(Error::config(
                        "consumer.dedup.ttl",
                        format!(
                            "{} is not longer than the longest redelivery window ({}): a late redelivery would run its handler again",
                            humantime::format_duration(*ttl),
                            humantime::format_duration(window)
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The store.
    pub fn store(&self) -> std::sync::Arc<dyn busway_core::IdempotencyStore> {
        match self {
            Self::Memory {
                capacity,
                ttl,
                lease,
            } => std::sync::Arc::new(
                busway_core::MemoryIdempotencyStore::new(*capacity, *ttl).with_lease(*lease),
            ),
        }
    }
}

impl Default for ConsumerDefaults {
    fn default() -> Self {
        Self {
            concurrency: 8,
            retry: RetryPolicy::default(),
            redelivery: RedeliveryPolicy::default(),
            timeout: None,
            circuit_breaker: None,
            drain_timeout: Duration::from_secs(30),
            dedup: None,
        }
    }
}

/// Everything [`Bus::connect`](crate::Bus::connect) needs.
///
/// ```toml
/// broker = "rabbitmq"            # memory | rabbitmq | kafka | servicebus
///
/// [rabbitmq]
/// url = "amqp://guest:guest@127.0.0.1:5672/%2f"
///
/// [consumer]
/// concurrency = 16
/// timeout = "30s"
/// retry = { max_attempts = 3, backoff = { kind = "exponential", initial = "100ms", factor = 2.0, max_delay = "5s", jitter = true } }
/// redelivery = { max_deliveries = 5, backoff = { kind = "fixed", delay = "10s" } }
/// ```
///
/// Environment variables override the file: `BUSWAY_BROKER=kafka`, and `__` for nesting, e.g.
/// `BUSWAY_KAFKA__BOOTSTRAP_SERVERS=10.0.0.5:9092` or `BUSWAY_CONSUMER__CONCURRENCY=32`.
/// Variables without `__` other than `BUSWAY_BROKER` and `BUSWAY_CONFIG` are not configuration
/// (e.g. the test fixtures' `BUSWAY_RABBITMQ_URL`) and are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// The broker to use.
    pub broker: BrokerKind,
    /// In-process broker limits.
    #[cfg(feature = "memory")]
    pub memory: busway_memory::MemoryConfig,
    /// RabbitMQ connection and topology.
    #[cfg(feature = "rabbitmq")]
    pub rabbitmq: busway_rabbitmq::RabbitMqConfig,
    /// Kafka connection, topics and consumer groups.
    #[cfg(feature = "kafka")]
    pub kafka: busway_kafka::KafkaConfig,
    /// Azure Service Bus connection.
    #[cfg(feature = "servicebus")]
    pub servicebus: busway_servicebus::ServiceBusConfig,
    /// Consumer defaults.
    pub consumer: ConsumerDefaults,
}

impl BusConfig {
    /// Reads `BUSWAY_CONFIG` (or `busway.toml` in the working directory, when it exists) and the
    /// `BUSWAY_*` environment variables.
    pub fn load() -> Result<Self> {
        let path =
            std::env::var("BUSWAY_CONFIG").unwrap_or_else(|_| DEFAULT_CONFIG_FILE.to_owned());
        let explicit = std::env::var_os("BUSWAY_CONFIG").is_some();
        if explicit && !Path::new(&path).exists() {
            return Err(Error::config(
                "BUSWAY_CONFIG",
                format!("file {path} does not exist"),
            ));
        }
        Self::from_figment(Figment::new().merge(Toml::file(path)).merge(env()))
    }

    /// Reads one TOML file, then the `BUSWAY_*` environment variables.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::config(
                "config file",
                format!("{} does not exist", path.display()),
            ));
        }
        Self::from_figment(Figment::new().merge(Toml::file(path)).merge(env()))
    }

    /// Parses TOML text alone (no environment).
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    /// Extracts from any figment, mapping errors to [`Error::Config`] naming the field.
    ///
    /// The error never repeats the value it found: the setting may be a password or a key.
    pub fn from_figment(figment: Figment) -> Result<Self> {
        figment.extract().map_err(|e| {
            let field = if e.path.is_empty() {
                "<root>".to_owned()
            } else {
                e.path.join(".")
            };
            Error::config(field, describe(&e.kind))
        })
    }
}

/// A figment error without the offending value.
fn describe(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(found, expected) => {
            format!("expected {expected}, found {}", shape(found))
        }
        Kind::InvalidValue(found, expected) => {
            format!("invalid value ({}), expected {expected}", shape(found))
        }
        other => other.to_string(),
    }
}

/// What kind of value was found, never the value itself.
fn shape(found: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match found {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) => "a character",
        Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit => "nothing",
        Actual::Option => "an optional value",
        Actual::NewtypeStruct => "a newtype struct",
        Actual::Seq => "a sequence",
        Actual::Map => "a table",
        Actual::Enum => "an enum",
        Actual::UnitVariant
        | Actual::NewtypeVariant
        | Actual::TupleVariant
        | Actual::StructVariant => "an enum variant",
        Actual::Other(_) => "another kind of value",
    }
}

/// `BUSWAY_*` variables that are configuration: `BUSWAY_BROKER` and nested `A__B` keys.
fn env() -> Env {
    Env::prefixed("BUSWAY_")
        .filter(|key| key.as_str().eq_ignore_ascii_case("broker") || key.as_str().contains("__"))
        .split("__")
}

#[cfg(test)]
mod tests {
    use super::*;
    use busway_core::Backoff;

    #[test]
    fn defaults_to_the_in_process_broker() {
        let config = BusConfig::from_toml("").unwrap();
        assert_eq!(config.broker, BrokerKind::Memory);
        assert_eq!(config.consumer, ConsumerDefaults::default());
    }

    #[test]
    fn reads_consumer_policies_with_human_durations() {
        let config = BusConfig::from_toml(
            r#"
            broker = "memory"
            [consumer]
            concurrency = 16
            timeout = "2s"
            retry = { max_attempts = 4, backoff = { kind = "fixed", delay = "250ms" } }
            redelivery = { max_deliveries = 7, backoff = { kind = "exponential", initial = "1s", factor = 3.0, max_delay = "1m", jitter = false } }
            circuit_breaker = { failure_threshold = 5, cool_down = "30s" }
            "#,
        )
        .unwrap();
        assert_eq!(config.consumer.concurrency, 16);
        assert_eq!(config.consumer.timeout, Some(Duration::from_secs(2)));
        assert_eq!(config.consumer.retry.max_attempts, 4);
        assert_eq!(
            config.consumer.retry.backoff,
            Backoff::Fixed {
                delay: Duration::from_millis(250)
            }
        );
        assert_eq!(config.consumer.redelivery.max_deliveries, 7);
        assert_eq!(
            config.consumer.circuit_breaker.unwrap().cool_down,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = BusConfig::from_toml("broker = \"carrier-pigeon\"").unwrap_err();
        assert!(err.to_string().contains("`broker`"), "{err}");
        let err = BusConfig::from_toml("[consumer]\nconcurrency = \"many\"").unwrap_err();
        assert!(err.to_string().contains("`consumer.concurrency`"), "{err}");
        let err = BusConfig::from_toml("[consumer]\nconcurency = 3").unwrap_err();
        assert!(err.to_string().contains("concurency"), "{err}");
        let err = BusConfig::from_toml("[consumer]\ntimeout = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("`consumer.timeout`"), "{err}");
    }

    #[test]
    fn dedup_is_configured_like_the_rest_and_must_outlive_redeliveries() {
        let config = BusConfig::from_toml(
            "[consumer]\nredelivery = { max_deliveries = 3, backoff = { kind = \"fixed\", delay = \"1h\" } }\n[consumer.dedup]\nstore = \"memory\"\nttl = \"90m\"",
        )
        .unwrap();
        let dedup = config.consumer.dedup.clone().unwrap();
        let err = dedup.validate(&config.consumer.redelivery).unwrap_err();
        assert!(err.to_string().contains("`consumer.dedup.ttl`"), "{err}");
        let config = BusConfig::from_toml("[consumer.dedup]\nstore = \"memory\"").unwrap();
        let dedup = config.consumer.dedup.clone().unwrap();
        dedup.validate(&config.consumer.redelivery).unwrap();
        let err = BusConfig::from_toml("[consumer.dedup]\nstore = \"carrier-pigeon\"").unwrap_err();
        assert!(err.to_string().contains("consumer.dedup"), "{err}");
    }

    #[test]
    fn errors_never_repeat_the_value_they_found() {
        for text in [
            "[consumer]\nconcurrency = \"hunter2-secret\"",
            "[consumer]\ndrain_timeout = 4242424242",
            "[consumer]\nretry = \"hunter2-secret\"",
        ] {
            let err = BusConfig::from_toml(text).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(!err.contains("4242424242"), "{err}");
            assert!(err.contains("`consumer."), "{err}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn environment_overrides_the_file_and_ignores_fixture_variables() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "busway.toml",
                "broker = \"memory\"\n[consumer]\nconcurrency = 2",
            )?;
            jail.set_env("BUSWAY_CONSUMER__CONCURRENCY", "32");
            jail.set_env("BUSWAY_RABBITMQ_URL", "amqp://fixture-only");
            let config = BusConfig::load().map_err(|e| e.to_string())?;
            assert_eq!(config.consumer.concurrency, 32);
            jail.set_env("BUSWAY_BROKER", "kafka");
            let config = BusConfig::load().map_err(|e| e.to_string())?;
            assert_eq!(config.broker, BrokerKind::Kafka);
            Ok(())
        });
    }
}
