//! Connection and behaviour settings, deserialised from busway's configuration.

use std::fmt;
use std::time::Duration;

use busway_core::{Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Service Bus's message size limit on the Standard tier and in both emulators.
pub const STANDARD_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Settings of a [`ServiceBusBroker`](crate::ServiceBusBroker).
///
/// Give either a `connection_string`, or an `endpoint` with `sas_key_name` and `sas_key` (or an
/// `endpoint` alone with [`ServiceBusBroker::connect_with_credential`](crate::ServiceBusBroker::connect_with_credential)
/// for Entra ID). Secrets never appear in `Debug` output.
///
/// ```
/// let config: busway_servicebus::ServiceBusConfig = serde_json::from_str(r#"{
///     "connection_string": "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true",
///     "lock_renewal": "10m"
/// }"#).unwrap();
/// assert!(!format!("{config:?}").contains("SAS_KEY_VALUE"));
/// ```
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceBusConfig {
    /// `Endpoint=sb://<namespace>/;SharedAccessKeyName=..;SharedAccessKey=..`. With
    /// `UseDevelopmentEmulator=true` the connection is plain AMQP to the endpoint's host and port.
    pub connection_string: Option<SecretString>,
    /// The namespace host (`<name>.servicebus.windows.net`), or `host:port` of an emulator.
    pub endpoint: Option<String>,
    /// Name of the shared access policy, with `sas_key`.
    pub sas_key_name: Option<String>,
    /// The shared access key, with `sas_key_name`.
    pub sas_key: Option<SecretString>,
    /// Plain AMQP without TLS, honouring the endpoint's port: for emulators only.
    pub emulator: bool,
    /// Largest encoded message accepted; larger ones fail with `TooLarge` before they are sent.
    /// 256 KiB on Standard and in the emulators, up to 100 MiB on Premium.
    pub max_message_bytes: usize,
    /// How long the lock of an unsettled delivery is kept renewed while its handler runs;
    /// zero disables renewal.
    #[serde(with = "humantime_serde")]
    pub lock_renewal: Duration,
    /// busway topics that are Service Bus queues (point to point): every group of such a topic
    /// competes on the one queue.
    pub queues: Vec<String>,
    /// Whether subscribing installs the busway routing rules on the subscription, so that
    /// delayed redeliveries and redriven dead letters reach only their group (see the crate docs).
    pub manage_rules: bool,
    /// Sessions a per-key-ordered subscription processes at once.
    pub max_sessions: usize,
    /// How long an accepted session may stay empty before it is released for others.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// Senders opened per topic, so that concurrent publishes do not queue behind one link.
    pub senders_per_topic: usize,
    /// Time allowed for one broker operation before the client retries it.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// Retries of a failed broker operation (with the client's exponential backoff).
    pub max_retries: u32,
}

impl Default for ServiceBusConfig {
    fn default() -> Self {
        Self {
            connection_string: None,
            endpoint: None,
            sas_key_name: None,
            sas_key: None,
            emulator: false,
            max_message_bytes: STANDARD_MAX_MESSAGE_BYTES,
            lock_renewal: Duration::from_secs(300),
            queues: Vec::new(),
            manage_rules: true,
            max_sessions: 8,
            session_idle_timeout: Duration::from_secs(1),
            senders_per_topic: 4,
            operation_timeout: Duration::from_secs(60),
            max_retries: 3,
        }
    }
}

impl fmt::Debug for ServiceBusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<SecretString>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("ServiceBusConfig")
            .field("connection_string", &redacted(&self.connection_string))
            .field("endpoint", &self.endpoint)
            .field("sas_key_name", &self.sas_key_name)
            .field("sas_key", &redacted(&self.sas_key))
            .field("emulator", &self.emulator)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("lock_renewal", &self.lock_renewal)
            .field("queues", &self.queues)
            .field("manage_rules", &self.manage_rules)
            .field("max_sessions", &self.max_sessions)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("senders_per_topic", &self.senders_per_topic)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl ServiceBusConfig {
    /// Settings for a namespace reached with a connection string.
    pub fn from_connection_string(connection_string: impl Into<String>) -> Self {
        Self {
            connection_string: Some(SecretString::from(connection_string.into())),
            ..Self::default()
        }
    }

    /// Settings for an emulator at `host:port` with a shared access key.
    pub fn emulator(
        endpoint: impl Into<String>,
        sas_key_name: impl Into<String>,
        sas_key: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            sas_key_name: Some(sas_key_name.into()),
            sas_key: Some(SecretString::from(sas_key.into())),
            emulator: true,
            ..Self::default()
        }
    }

    /// Checks the values and works out where and how to connect.
    pub(crate) fn target(&self) -> Result<Target> {
        if self.max_message_bytes == 0 {
            return Err(Error::config(
                "servicebus.max_message_bytes",
                "must be positive",
            ));
        }
        if self.senders_per_topic == 0 {
            return Err(Error::config(
                "servicebus.senders_per_topic",
                "must be at least 1",
            ));
        }
        if self.max_sessions == 0 {
            return Err(Error::config(
                "servicebus.max_sessions",
                "must be at least 1",
            ));
        }
        if let Some(cs) = &self.connection_string {
            if self.endpoint.is_some() || self.sas_key.is_some() {
                return Err(Error::config(
                    "servicebus.connection_string",
                    "give either a connection string or endpoint + sas_key_name + sas_key, not both",
                ));
            }
            let parsed = ConnectionString::parse(cs.expose_secret())?;
            return Ok(Target {
                endpoint: parsed.endpoint,
                plain: parsed.emulator || self.emulator,
                key: Some((parsed.key_name, parsed.key)),
            });
        }
        let Some(endpoint) = self.endpoint.as_deref().map(strip_scheme) else {
            return Err(Error::config(
                "servicebus.connection_string",
                "set a connection string, or an endpoint with sas_key_name and sas_key",
            ));
        };
        if endpoint.is_empty() {
            return Err(Error::config("servicebus.endpoint", "must not be empty"));
        }
        let key = match (&self.sas_key_name, &self.sas_key) {
            (Some(name), Some(key)) => Some((name.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "servicebus.sas_key",
                    "sas_key_name and sas_key go together",
                ));
            }
        };
        Ok(Target {
            endpoint: endpoint.to_owned(),
            plain: self.emulator,
            key,
        })
    }
}

/// Where and how to connect, resolved from the configuration.
pub(crate) struct Target {
    /// Namespace host, with a port for emulators.
    pub(crate) endpoint: String,
    /// Plain AMQP (emulators) instead of AMQP over TLS.
    pub(crate) plain: bool,
    /// Shared access key name and key; `None` when a token credential is used.
    pub(crate) key: Option<(String, SecretString)>,
}

/// The parts of a Service Bus connection string busway uses.
struct ConnectionString {
    endpoint: String,
    key_name: String,
    key: SecretString,
    emulator: bool,
}

impl ConnectionString {
    /// Parses `Key=Value;...`. The client's own parser drops the endpoint's port, which makes
    /// emulators on other ports unreachable, so busway reads the string itself.
    fn parse(text: &str) -> Result<Self> {
        let field = "servicebus.connection_string";
        let (mut endpoint, mut key_name, mut key, mut emulator) = (None, None, None, false);
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                return Err(Error::config(
                    field,
                    "expected `Key=Value` pairs separated by `;`",
                ));
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(strip_scheme(value.trim()).to_owned()),
                "sharedaccesskeyname" => key_name = Some(value.trim().to_owned()),
                // A key may end in `=` (base64): keep everything after the first `=`.
                "sharedaccesskey" => key = Some(SecretString::from(value.trim().to_owned())),
                "usedevelopmentemulator" => emulator = value.trim().eq_ignore_ascii_case("true"),
                "entitypath" => {
                    return Err(Error::config(
                        field,
                        "use a namespace-level connection string (without EntityPath)",
                    ));
                }
                _ => {}
            }
        }
        let endpoint = endpoint
            .filter(|e| !e.is_empty())
            .ok_or_else(|| Error::config(field, "Endpoint is missing"))?;
        let key_name =
            key_name.ok_or_else(|| Error::config(field, "SharedAccessKeyName is missing"))?;
        let key = key.ok_or_else(|| Error::config(field, "SharedAccessKey is missing"))?;
        Ok(Self {
            endpoint,
            key_name,
            key,
            emulator,
        })
    }
}

/// `sb://host:port/` -> `host:port`.
fn strip_scheme(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    rest.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn emulator_connection_strings_keep_their_port() {
        let config = ServiceBusConfig::from_connection_string(
            "Endpoint=sb://127.0.0.1:5999;SharedAccessKeyName=Root;SharedAccessKey=abc==;UseDevelopmentEmulator=true",
        );
        let target = config.target().unwrap();
        assert_eq!(target.endpoint, "127.0.0.1:5999");
        assert!(target.plain);
        let (name, key) = target.key.unwrap();
        assert_eq!(name, "Root");
        assert_eq!(key.expose_secret(), "abc==");
    }

    #[test]
    fn azure_connection_strings_use_tls() {
        let config = ServiceBusConfig::from_connection_string(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=k",
        );
        let target = config.target().unwrap();
        assert_eq!(target.endpoint, "ns.servicebus.windows.net");
        assert!(!target.plain);
    }

    #[test]
    fn secrets_are_redacted_and_mistakes_name_the_field() {
        let config = ServiceBusConfig::emulator("127.0.0.1:1", "root", "very-secret");
        assert!(!format!("{config:?}").contains("very-secret"));
        let err = ServiceBusConfig::default().target().err().unwrap();
        assert!(
            err.to_string().contains("servicebus.connection_string"),
            "{err}"
        );
        let bad = ServiceBusConfig::from_connection_string("Endpoint=sb://x/");
        assert!(bad.target().is_err());
        let parsed: ServiceBusConfig =
            serde_json::from_str(r#"{"endpoint":"h:1","emulator":true,"lock_renewal":"2s"}"#)
                .unwrap();
        assert_eq!(parsed.lock_renewal, Duration::from_secs(2));
        assert!(serde_json::from_str::<ServiceBusConfig>(r#"{"nope":1}"#).is_err());
    }
}
