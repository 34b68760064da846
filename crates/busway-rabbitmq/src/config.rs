//! Settings of the RabbitMQ adapter, deserialisable from the `rabbitmq` section of a busway config.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use busway_core::preflight::SizeLimit;
use busway_core::{Error, Result};
use lapin::uri::{AMQPScheme, AMQPUri};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The default size limit: RabbitMQ 4's default `max_message_size` (3.x allowed 128 MiB, but
/// messages that large hurt every other queue on the node).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The URL used when none is configured: a local broker with RabbitMQ's default user.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Settings of a [`RabbitMqBroker`](crate::RabbitMqBroker).
///
/// Every field has a default, so an empty section is a valid configuration for a local broker.
/// The URL carries the credentials; `Debug` shows it with the password replaced by `***`.
///
/// ```
/// use busway_rabbitmq::{QueueType, RabbitMqConfig};
///
/// let config: RabbitMqConfig = serde_json::from_str(r#"{
///     "url": "amqps://app:s3cret@rabbit.internal:5671/orders?heartbeat=10",
///     "queue_type": "quorum",
///     "publish_timeout": "10s",
///     "reconnect": { "initial_delay": "200ms", "max_delay": "30s" }
/// }"#)?;
/// assert_eq!(config.queue_type, QueueType::Quorum);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RabbitMqConfig {
    /// `amqp://user:password@host:port/vhost` or `amqps://…` (TLS with rustls). The vhost is
    /// URL-encoded (`%2f` is the default vhost `/`); query parameters `heartbeat`,
    /// `connection_timeout`, `frame_max` and `channel_max` are honoured.
    pub url: SecretString,
    /// Queue type of the group, wait and dead-letter queues busway declares.
    pub queue_type: QueueType,
    /// Declare exchanges, queues and bindings (the default). When `false`, busway declares
    /// nothing and expects the topology described in the crate docs to exist (e.g. managed by
    /// definitions or an operator); missing pieces surface as errors.
    pub declare_topology: bool,
    /// How long a publish (and the republish behind a redelivery or dead-lettering) may wait for
    /// the connection and the broker's confirm before failing. During an outage a publish waits
    /// for the reconnection up to this bound; it never silently drops the message.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Reconnection after a lost connection or a broker restart.
    pub reconnect: ReconnectConfig,
    /// The broker's size limit, in bytes (data plus attributes). busway publishes messages of
    /// up to this limit less [`METADATA_HEADROOM`](busway_core::preflight::METADATA_HEADROOM)
    /// (larger ones are refused before sending), so that the copies behind a redelivery or a
    /// dead letter, which carry busway's metadata, stay within it. Keep it at or below the
    /// broker's `max_message_size`; it must be above twice the headroom.
    pub max_message_bytes: usize,
    /// Name shown for busway's connections in the management UI and `rabbitmqctl` (suffixed
    /// with `publish` / `consume`).
    pub connection_name: Option<String>,
    /// TLS settings for `amqps://` URLs.
    pub tls: TlsConfig,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from(DEFAULT_URL),
            queue_type: QueueType::Classic,
            declare_topology: true,
            publish_timeout: Duration::from_secs(30),
            reconnect: ReconnectConfig::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            connection_name: None,
            tls: TlsConfig::default(),
        }
    }
}

impl RabbitMqConfig {
    /// A configuration for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            ..Self::default()
        }
    }

    /// Sets the queue type.
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// Sets whether busway declares the topology.
    pub fn declare_topology(mut self, declare: bool) -> Self {
        self.declare_topology = declare;
        self
    }

    /// Sets how long a publish may wait for the connection and the confirm.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Sets the reconnection backoff.
    pub fn reconnect(mut self, reconnect: ReconnectConfig) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Sets the size limit.
    pub fn max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = limit;
        self
    }

    /// Sets the connection name shown by the broker.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Sets the TLS settings.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact(self.url.expose_secret())
    }

    /// The size limit: `max_message_bytes` for the broker, less busway's metadata headroom for
    /// a publish, so that every published message can later be redelivered and dead-lettered.
    pub(crate) fn size_limit(&self) -> Result<SizeLimit> {
        SizeLimit::new("rabbitmq.max_message_bytes", self.max_message_bytes)
    }

    /// Parses the URL and checks every setting, naming the offending field.
    pub(crate) fn validate(&self) -> Result<AMQPUri> {
        let raw = self.url.expose_secret();
        // amq-protocol's own error would echo the URL, password included: report our own.
        let uri: AMQPUri = raw.parse().map_err(|_| {
            Error::config(
                "rabbitmq.url",
                format!(
                    "{} is not an amqp:// or amqps:// URL (amqp://user:password@host:port/vhost)",
                    redact(raw)
                ),
            )
        })?;
        if uri.scheme == AMQPScheme::AMQP && self.tls.is_configured() {
            return Err(Error::config(
                "rabbitmq.tls",
                "TLS settings need an amqps:// URL",
            ));
        }
        if self.publish_timeout.is_zero() {
            return Err(Error::config(
                "rabbitmq.publish_timeout",
                "must be positive",
            ));
        }
        self.size_limit()?;
        if self.reconnect.initial_delay.is_zero()
            || self.reconnect.max_delay < self.reconnect.initial_delay
        {
            return Err(Error::config(
                "rabbitmq.reconnect",
                "initial_delay must be positive and at most max_delay",
            ));
        }
        Ok(uri)
    }
}

impl fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("url", &self.redacted_url())
            .field("queue_type", &self.queue_type)
            .field("declare_topology", &self.declare_topology)
            .field("publish_timeout", &self.publish_timeout)
            .field("reconnect", &self.reconnect)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("connection_name", &self.connection_name)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `scheme://user:***@host…`: the password never leaves the config. Unparseable input is not
/// echoed at all, since we cannot tell where its password is.
fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have credentials, which we just saw one in.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// The RabbitMQ queue type of the queues busway declares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// Classic durable queues: single node, lowest latency.
    #[default]
    Classic,
    /// Quorum queues: replicated (Raft), with a broker-side delivery count; the choice for
    /// clusters where a node loss must not lose messages.
    Quorum,
}

impl QueueType {
    /// The value of the `x-queue-type` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

/// Reconnection backoff: exponential from `initial_delay` up to `max_delay`, with jitter, for
/// as long as the broker stays away.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReconnectConfig {
    /// Delay before the second attempt (the first is immediate).
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Longest delay between two attempts.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl ReconnectConfig {
    /// A backoff from `initial_delay` to `max_delay`.
    pub fn new(initial_delay: Duration, max_delay: Duration) -> Self {
        Self {
            initial_delay,
            max_delay,
        }
    }
}

/// TLS settings for `amqps://` URLs. Without any, the server certificate is verified against
/// the operating system's trust store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) that signed the server certificate (a private CA).
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, for mutual TLS (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM file of the client's PKCS#8 private key, for mutual TLS.
    pub client_key_file: Option<PathBuf>,
}

impl TlsConfig {
    fn is_configured(&self) -> bool {
        self.ca_file.is_some() || self.client_cert_file.is_some() || self.client_key_file.is_some()
    }

    /// Reads the files into lapin's TLS settings.
    pub(crate) fn load(&self) -> Result<lapin::tcp::OwnedTLSConfig> {
        let read = |field: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                Error::config(
                    format!("rabbitmq.tls.{field}"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })
        };
        let cert_chain = match &self.ca_file {
            Some(path) => Some(String::from_utf8(read("ca_file", path)?).map_err(|_| {
                Error::config(
                    "rabbitmq.tls.ca_file",
                    format!("{} is not a PEM file", path.display()),
                )
            })?),
            None => None,
        };
        let identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: read("client_cert_file", cert)?,
                key: read("client_key_file", key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "rabbitmq.tls",
                    "client_cert_file and client_key_file go together",
                ));
            }
        };
        Ok(lapin::tcp::OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let config = RabbitMqConfig::new("amqp://app:hunter2@rabbit:5672/%2f");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app:***@rabbit"), "{shown}");
        assert_eq!(redact("not a url hunter2"), "<unparseable URL>");
    }

    #[test]
    fn validation_names_the_field_without_echoing_secrets() {
        let err = RabbitMqConfig::new("http//x:hunter2@")
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("rabbitmq.url"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = RabbitMqConfig::default()
            .publish_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("publish_timeout"), "{err}");
        let tls = TlsConfig {
            ca_file: Some("/tmp/ca.pem".into()),
            ..TlsConfig::default()
        };
        let err = RabbitMqConfig::default().tls(tls).validate().unwrap_err();
        assert!(err.to_string().contains("amqps"), "{err}");
        assert!(RabbitMqConfig::default().validate().is_ok());
        let err = RabbitMqConfig::default()
            .max_message_bytes(4096)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("max_message_bytes"), "{err}");
    }

    #[test]
    fn deserialises_with_defaults_and_refuses_unknown_fields() {
        let config: RabbitMqConfig =
            serde_json::from_str(r#"{"declare_topology": false}"#).unwrap();
        assert!(!config.declare_topology);
        assert_eq!(config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(config.publish_timeout, Duration::from_secs(30));
        assert!(serde_json::from_str::<RabbitMqConfig>(r#"{"urll": "x"}"#).is_err());
    }
}
