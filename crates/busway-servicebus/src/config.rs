//! Connection and behaviour settings, deserialised from busway's configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use busway_core::preflight::SizeLimit;
use busway_core::{Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Service Bus's message size limit on the Standard tier and in both emulators.
pub const STANDARD_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Settings of a [`ServiceBusBroker`](crate::ServiceBusBroker).
///
/// Give either a `connection_string`, or an `endpoint` with `sas_key_name` and `sas_key` (or an
/// `endpoint` alone with [`ServiceBusBroker::connect_with_credential`](crate::ServiceBusBroker::connect_with_credential)
/// for Entra ID). Secrets never appear in `Debug` output, in errors, nor in deserialisation
/// errors (a secret setting of the wrong type is reported without its value).
///
/// Connections use TLS, except to an emulator (`emulator = true` or
/// `UseDevelopmentEmulator=true`) on a loopback address (`localhost`, `127.0.0.0/8`, `::1`).
/// An emulator elsewhere (e.g. a container reached by its service name) needs `insecure = true`,
/// since keys and tokens then cross the network in clear; busway logs a WARN naming the setting
/// on every such connection.
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
    /// `UseDevelopmentEmulator=true` the connection is plain AMQP to the endpoint's host and port
    /// (loopback hosts only, unless `insecure`).
    #[serde(deserialize_with = "secret")]
    pub connection_string: Option<SecretString>,
    /// The namespace host (`<name>.servicebus.windows.net`), or `host:port` of an emulator.
    pub endpoint: Option<String>,
    /// Name of the shared access policy, with `sas_key`.
    pub sas_key_name: Option<String>,
    /// The shared access key, with `sas_key_name`.
    #[serde(deserialize_with = "secret")]
    pub sas_key: Option<SecretString>,
    /// Plain AMQP without TLS, honouring the endpoint's port: for emulators on a loopback
    /// address (see `insecure` for others).
    pub emulator: bool,
    /// Allows plain AMQP (an emulator) to a host that is not a loopback address. Keys and
    /// tokens then travel unencrypted; every such connection is logged at WARN.
    pub insecure: bool,
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
    /// Service Bus entity (topic or queue) of a busway topic whose name differs; other topics
    /// use their own name. Deliveries, dead-letter metadata and `DeadLetters::list` still show
    /// the busway topic. See also [`ServiceBusBroker::map_topic`](crate::ServiceBusBroker::map_topic).
    pub entities: BTreeMap<String, String>,
    /// Whether subscribing installs busway's routing rules on the subscription (needs Manage
    /// rights), so that delayed redeliveries and redriven dead letters reach only their group.
    /// When false the rules must already be in place (see the crate docs): subscribing and
    /// redriving check them and fail with a configuration error naming this setting when they
    /// are missing, rather than send copies that would reach other groups.
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
    /// Retries of a failed publish (with exponential backoff, reconnecting when the connection
    /// was lost). Settlements are retried by the consumer runtime.
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
            insecure: false,
            max_message_bytes: STANDARD_MAX_MESSAGE_BYTES,
            lock_renewal: Duration::from_secs(300),
            queues: Vec::new(),
            entities: BTreeMap::new(),
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
            .field("insecure", &self.insecure)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("lock_renewal", &self.lock_renewal)
            .field("queues", &self.queues)
            .field("entities", &self.entities)
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

    /// The size limit, checked: it must leave room for busway's metadata.
    pub(crate) fn size_limit(&self) -> Result<SizeLimit> {
        SizeLimit::new("servicebus.max_message_bytes", self.max_message_bytes)
    }

    /// Checks the values and works out where and how to connect.
    pub(crate) fn target(&self) -> Result<Target> {
        self.size_limit()?;
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
        for (topic, entity) in &self.entities {
            if topic.is_empty() || entity.is_empty() {
                return Err(Error::config(
                    "servicebus.entities",
                    "topic and entity names must not be empty",
                ));
            }
        }
        let (endpoint, emulator, key) = if let Some(cs) = &self.connection_string {
            if self.endpoint.is_some() || self.sas_key.is_some() {
                return Err(Error::config(
                    "servicebus.connection_string",
                    "give either a connection string or endpoint + sas_key_name + sas_key, not both",
                ));
            }
            let parsed = ConnectionString::parse(cs.expose_secret())?;
            (
                parsed.endpoint,
                parsed.emulator || self.emulator,
                Some((parsed.key_name, parsed.key)),
            )
        } else {
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
            (endpoint.to_owned(), self.emulator, key)
        };
        let transport = if !emulator {
            Transport::Tls
        } else if is_loopback(host_of(&endpoint)) {
            Transport::PlainLoopback
        } else if self.insecure {
            Transport::PlainInsecure
        } else {
            return Err(Error::config(
                "servicebus.insecure",
                format!(
                    "an emulator connection is plain AMQP, and `{}` is not a loopback address: \
                     keys and tokens would cross the network unencrypted. Use TLS (no emulator \
                     setting), an emulator on localhost, or set servicebus.insecure = true to \
                     accept it",
                    host_of(&endpoint)
                ),
            ));
        };
        Ok(Target {
            endpoint,
            transport,
            key,
        })
    }
}

/// How the connection is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// AMQP over TLS (real namespaces).
    Tls,
    /// Plain AMQP to an emulator on this machine.
    PlainLoopback,
    /// Plain AMQP across a network, allowed by `insecure`: logged at WARN on every connection.
    PlainInsecure,
}

impl Transport {
    pub(crate) fn is_plain(self) -> bool {
        !matches!(self, Self::Tls)
    }
}

/// The host of `host[:port]` (IPv6 literals in brackets).
fn host_of(endpoint: &str) -> &str {
    if let Some(rest) = endpoint.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match endpoint.rsplit_once(':') {
        // A bare IPv6 address has more than one colon and no port.
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            host
        }
        _ => endpoint,
    }
}

/// Whether traffic to `host` stays on this machine.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where and how to connect, resolved from the configuration.
pub(crate) struct Target {
    /// Namespace host, with a port for emulators.
    pub(crate) endpoint: String,
    /// TLS, or plain AMQP to an emulator.
    pub(crate) transport: Transport,
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

/// Deserialises an optional secret string without ever repeating the value in an error:
/// serde's own type-mismatch errors quote what they found, which here would be the secret.
fn secret<'de, D>(deserializer: D) -> std::result::Result<Option<SecretString>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserializer.deserialize_option(OptionalSecret)
}

fn not_a_string<E: serde::de::Error>() -> E {
    E::custom("a secret setting must be a string (the value found is not shown)")
}

struct OptionalSecret;

impl<'de> serde::de::Visitor<'de> for OptionalSecret {
    type Value = Option<SecretString>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        // `deserialize_any`, not `deserialize_str`: a self-describing format reports a value of
        // the wrong type through the visitor below instead of quoting it in its own error.
        deserializer.deserialize_any(Secret).map(Some)
    }
}

struct Secret;

/// Every non-string value is refused without being shown.
impl<'de> serde::de::Visitor<'de> for Secret {
    type Value = SecretString;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(SecretString::from(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(SecretString::from(v))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Err(not_a_string())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Err(not_a_string())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Err(not_a_string())
    }
    fn visit_i128<E: serde::de::Error>(self, _: i128) -> std::result::Result<Self::Value, E> {
        Err(not_a_string())
    }
    fn visit_u128<E: serde::de::Error>(self, _: u128) -> std::result::Result<Self::Value, E> {
        Err(not_a_string())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Err(not_a_string())
    }
    fn visit_char<E: serde::de::Error>(self, v: char) -> std::result::Result<Self::Value, E> {
        Ok(SecretString::from(v.to_string()))
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> std::result::Result<Self::Value, E> {
        Err(not_a_string())
    }
    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
        Err(not_a_string())
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
        Err(not_a_string())
    }
    fn visit_some<D: serde::Deserializer<'de>>(
        self,
        _: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        Err(not_a_string())
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(
        self,
        _: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        Err(not_a_string())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        _: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        Err(not_a_string())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        _: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        Err(not_a_string())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(
        self,
        _: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        Err(not_a_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    const KEY: &str = "S3cr3tK3yValue+/=";

    fn emulator_string(host: &str) -> String {
        format!(
            "Endpoint=sb://{host};SharedAccessKeyName=Root;SharedAccessKey={KEY};UseDevelopmentEmulator=true"
        )
    }

    #[test]
    fn emulator_connection_strings_keep_their_port() {
        let config = ServiceBusConfig::from_connection_string(emulator_string("127.0.0.1:5999"));
        let target = config.target().unwrap();
        assert_eq!(target.endpoint, "127.0.0.1:5999");
        assert_eq!(target.transport, Transport::PlainLoopback);
        let (name, key) = target.key.unwrap();
        assert_eq!(name, "Root");
        assert_eq!(key.expose_secret(), KEY);
    }

    #[test]
    fn azure_connection_strings_use_tls() {
        let config = ServiceBusConfig::from_connection_string(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=k",
        );
        let target = config.target().unwrap();
        assert_eq!(target.endpoint, "ns.servicebus.windows.net");
        assert_eq!(target.transport, Transport::Tls);
    }

    /// Plain AMQP carries the SAS token (or an Entra token) in clear: only to this machine,
    /// unless `insecure` says otherwise. Fails on 1f6f772, where any host got plain AMQP.
    #[test]
    fn plain_amqp_only_to_loopback_unless_insecure() {
        for host in [
            "127.0.0.1:5672",
            "localhost",
            "LOCALHOST:1",
            "[::1]:5672",
            "::1",
            "127.8.0.1",
        ] {
            let target = ServiceBusConfig::from_connection_string(emulator_string(host))
                .target()
                .unwrap();
            assert_eq!(target.transport, Transport::PlainLoopback, "{host}");
        }
        for host in [
            "10.0.0.7:5672",
            "servicebus-emulator:5672",
            "ns.servicebus.windows.net",
            "[2001:db8::1]:5672",
            "localhost.evil.example",
        ] {
            let err = ServiceBusConfig::from_connection_string(emulator_string(host))
                .target()
                .err()
                .unwrap_or_else(|| panic!("{host}: plain AMQP accepted"));
            assert_eq!(err.kind(), busway_core::ErrorKind::Config);
            assert!(err.to_string().contains("servicebus.insecure"), "{err}");
            let flag = ServiceBusConfig::emulator(host, "Root", KEY)
                .target()
                .err()
                .unwrap();
            assert!(flag.to_string().contains("servicebus.insecure"), "{flag}");
            let allowed = ServiceBusConfig {
                insecure: true,
                ..ServiceBusConfig::from_connection_string(emulator_string(host))
            };
            assert_eq!(
                allowed.target().unwrap().transport,
                Transport::PlainInsecure
            );
        }
        // `insecure` alone does not turn TLS off.
        let tls = ServiceBusConfig {
            insecure: true,
            ..ServiceBusConfig::from_connection_string(
                "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=R;SharedAccessKey=k",
            )
        };
        assert_eq!(tls.target().unwrap().transport, Transport::Tls);
    }

    /// Every way a configuration can be wrong is reported without the key or the connection
    /// string, in `Display` and `Debug`.
    #[test]
    fn no_error_path_repeats_a_secret() {
        let with_key = |cs: &str| ServiceBusConfig::from_connection_string(cs.replace("KEY", KEY));
        let broken = [
            with_key("Endpoint=sb://x/;SharedAccessKey=KEY"),
            with_key("Endpoint=sb://x/;SharedAccessKeyName=n"),
            with_key("SharedAccessKeyName=n;SharedAccessKey=KEY"),
            with_key("Endpoint=sb://x/;SharedAccessKeyName=n;SharedAccessKey=KEY;EntityPath=q"),
            with_key("Endpoint=sb://x/;SharedAccessKeyName=n;SharedAccessKey=KEY;garbage"),
            with_key("KEY"),
            with_key(
                "Endpoint=sb://10.1.1.1:5672;SharedAccessKeyName=n;SharedAccessKey=KEY;UseDevelopmentEmulator=true",
            ),
            ServiceBusConfig {
                sas_key: Some(SecretString::from(KEY.to_owned())),
                ..with_key("Endpoint=sb://x/;SharedAccessKeyName=n;SharedAccessKey=KEY")
            },
            ServiceBusConfig {
                sas_key_name: None,
                ..ServiceBusConfig::emulator("127.0.0.1:1", "n", KEY)
            },
            ServiceBusConfig::emulator("10.0.0.1:1", "n", KEY),
            ServiceBusConfig {
                max_message_bytes: 10,
                ..ServiceBusConfig::emulator("127.0.0.1:1", "n", KEY)
            },
            ServiceBusConfig {
                senders_per_topic: 0,
                ..with_key("Endpoint=sb://x/;SharedAccessKeyName=n;SharedAccessKey=KEY")
            },
            ServiceBusConfig {
                max_sessions: 0,
                ..with_key("Endpoint=sb://x/;SharedAccessKeyName=n;SharedAccessKey=KEY")
            },
            ServiceBusConfig {
                endpoint: Some(String::new()),
                ..ServiceBusConfig::emulator("127.0.0.1:1", "n", KEY)
            },
        ];
        for config in broken {
            assert!(!format!("{config:?}").contains(KEY), "Debug shows the key");
            let err = config.target().err().expect("a configuration error");
            assert_eq!(err.kind(), busway_core::ErrorKind::Config, "{err}");
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains(KEY), "the key leaked: {text}");
                assert!(
                    !text.contains("SharedAccessKey="),
                    "the string leaked: {text}"
                );
                assert!(
                    text.contains("servicebus."),
                    "the setting is not named: {text}"
                );
            }
        }
    }

    /// A secret of the wrong type is refused without quoting it (serde's own message would).
    #[test]
    fn deserialisation_errors_never_quote_a_secret() {
        for json in [
            r#"{"sas_key": 918273645}"#,
            r#"{"sas_key": [918273645]}"#,
            r#"{"connection_string": {"k": 918273645}}"#,
            r#"{"connection_string": 918273645.5}"#,
            r#"{"sas_key": true}"#,
        ] {
            let err = serde_json::from_str::<ServiceBusConfig>(json).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("918273645"), "{text}");
            assert!(!text.contains("true"), "{text}");
            assert!(text.contains("not shown"), "{text}");
        }
        let parsed: ServiceBusConfig = serde_json::from_str(&format!(
            r#"{{"connection_string": "{}", "sas_key": null, "lock_renewal": "2s"}}"#,
            emulator_string("127.0.0.1:1")
        ))
        .unwrap();
        assert!(parsed.sas_key.is_none());
        assert_eq!(parsed.lock_renewal, Duration::from_secs(2));
        assert!(!format!("{parsed:?}").contains(KEY));
        assert!(serde_json::from_str::<ServiceBusConfig>(r#"{"nope":1}"#).is_err());
    }

    #[test]
    fn hosts_are_read_from_endpoints() {
        assert_eq!(host_of("127.0.0.1:5672"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5672"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(
            host_of("ns.servicebus.windows.net"),
            "ns.servicebus.windows.net"
        );
        assert_eq!(host_of("host:notaport"), "host:notaport");
    }
}
