//! Entity configuration: the official emulator's `Config.json` format and the Rust types that tests
//! use to declare entities directly.
//!
//! Property names, defaults and ranges follow the official emulator's schema
//! (`ServiceBus-Emulator/Schema/Config-schema.json`). Ranges are *not* clamped here: the emulator is
//! used with short lock durations and TTLs in tests, so [`EntityLimits`] decides whether they are
//! enforced.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Deserialize;

use crate::error::ConfigError;

/// Default lock duration (PT1M), as in Azure and the official emulator.
pub const DEFAULT_LOCK_DURATION: Duration = Duration::from_secs(60);
/// Default message time to live in the official emulator (PT1H).
pub const DEFAULT_MESSAGE_TTL: Duration = Duration::from_secs(3600);
/// Default duplicate detection window (PT20S).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(20);
/// Default maximum delivery count in the official emulator.
pub const DEFAULT_MAX_DELIVERY_COUNT: u32 = 3;

/// Properties shared by queues and subscriptions (the entities a receiver reads from).
#[derive(Debug, Clone, PartialEq)]
pub struct EntityProperties {
    /// How long a peek-lock lock (or a session lock) lasts before it expires.
    pub lock_duration: Duration,
    /// Deliveries after which a message is moved to the dead-letter queue.
    pub max_delivery_count: u32,
    /// Whether receivers must accept a session.
    pub requires_session: bool,
    /// Time to live applied to messages that do not carry a shorter one.
    pub default_message_ttl: Duration,
    /// Whether expired messages go to the dead-letter queue instead of being dropped.
    pub dead_lettering_on_message_expiration: bool,
    /// Entity (queue or topic) every incoming message is forwarded to.
    pub forward_to: Option<String>,
    /// Entity (queue or topic) dead-lettered messages are forwarded to.
    pub forward_dead_lettered_messages_to: Option<String>,
}

impl Default for EntityProperties {
    fn default() -> Self {
        Self {
            lock_duration: DEFAULT_LOCK_DURATION,
            max_delivery_count: DEFAULT_MAX_DELIVERY_COUNT,
            requires_session: false,
            default_message_ttl: DEFAULT_MESSAGE_TTL,
            dead_lettering_on_message_expiration: false,
            forward_to: None,
            forward_dead_lettered_messages_to: None,
        }
    }
}

/// Duplicate detection settings of a queue or topic (the entities a sender writes to).
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateDetection {
    /// Whether messages with a MessageId already seen inside the window are dropped.
    pub enabled: bool,
    /// How long a MessageId is remembered.
    pub window: Duration,
}

impl Default for DuplicateDetection {
    fn default() -> Self {
        Self {
            enabled: false,
            window: DEFAULT_DUPLICATE_WINDOW,
        }
    }
}

/// A queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueConfig {
    /// Queue name (entity path).
    pub name: String,
    /// Receive-side properties.
    pub properties: EntityProperties,
    /// Duplicate detection.
    pub duplicate_detection: DuplicateDetection,
}

impl QueueConfig {
    /// A queue with default properties.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets the lock duration.
    pub fn lock_duration(mut self, duration: Duration) -> Self {
        self.properties.lock_duration = duration;
        self
    }

    /// Sets MaxDeliveryCount.
    pub fn max_delivery_count(mut self, count: u32) -> Self {
        self.properties.max_delivery_count = count;
        self
    }

    /// Sets RequiresSession.
    pub fn requires_session(mut self, value: bool) -> Self {
        self.properties.requires_session = value;
        self
    }

    /// Sets DefaultMessageTimeToLive.
    pub fn default_message_ttl(mut self, ttl: Duration) -> Self {
        self.properties.default_message_ttl = ttl;
        self
    }

    /// Sets DeadLetteringOnMessageExpiration.
    pub fn dead_lettering_on_message_expiration(mut self, value: bool) -> Self {
        self.properties.dead_lettering_on_message_expiration = value;
        self
    }

    /// Sets ForwardTo.
    pub fn forward_to(mut self, entity: impl Into<String>) -> Self {
        self.properties.forward_to = Some(entity.into());
        self
    }

    /// Sets ForwardDeadLetteredMessagesTo.
    pub fn forward_dead_lettered_messages_to(mut self, entity: impl Into<String>) -> Self {
        self.properties.forward_dead_lettered_messages_to = Some(entity.into());
        self
    }

    /// Enables duplicate detection with the given history window.
    pub fn duplicate_detection(mut self, window: Duration) -> Self {
        self.duplicate_detection = DuplicateDetection {
            enabled: true,
            window,
        };
        self
    }
}

/// A topic and its subscriptions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Time to live applied to messages that do not carry a shorter one.
    pub default_message_ttl: Option<Duration>,
    /// Duplicate detection.
    pub duplicate_detection: DuplicateDetection,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionConfig>,
}

impl TopicConfig {
    /// A topic without subscriptions.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Adds a subscription.
    pub fn subscription(mut self, subscription: SubscriptionConfig) -> Self {
        self.subscriptions.push(subscription);
        self
    }

    /// Enables duplicate detection with the given history window.
    pub fn duplicate_detection(mut self, window: Duration) -> Self {
        self.duplicate_detection = DuplicateDetection {
            enabled: true,
            window,
        };
        self
    }
}

/// A subscription of a topic.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscriptionConfig {
    /// Subscription name.
    pub name: String,
    /// Receive-side properties.
    pub properties: EntityProperties,
    /// Rules; an empty list means the `$Default` rule (accept everything), as in Azure.
    pub rules: Vec<RuleConfig>,
}

impl SubscriptionConfig {
    /// A subscription with default properties and the `$Default` rule.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Adds a rule (replacing the implicit `$Default` rule).
    pub fn rule(mut self, rule: RuleConfig) -> Self {
        self.rules.push(rule);
        self
    }

    /// Sets the receive-side properties.
    pub fn properties(mut self, properties: EntityProperties) -> Self {
        self.properties = properties;
        self
    }
}

/// A subscription rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    /// Rule name.
    pub name: String,
    /// Filter deciding which messages the subscription receives.
    pub filter: RuleFilter,
}

impl RuleConfig {
    /// A correlation-filter rule.
    pub fn correlation(name: impl Into<String>, filter: CorrelationFilter) -> Self {
        Self {
            name: name.into(),
            filter: RuleFilter::Correlation(filter),
        }
    }

    /// A SQL-filter rule (only the subset described in [`crate::filter`] is evaluated).
    pub fn sql(name: impl Into<String>, expression: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            filter: RuleFilter::Sql(expression.into()),
        }
    }
}

/// A rule's filter.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleFilter {
    /// Correlation filter: every set field must equal the message's.
    Correlation(CorrelationFilter),
    /// SQL filter expression.
    Sql(String),
}

/// Correlation filter fields; unset fields match anything.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CorrelationFilter {
    /// `properties.correlation-id`
    pub correlation_id: Option<String>,
    /// `properties.message-id`
    pub message_id: Option<String>,
    /// `properties.to`
    pub to: Option<String>,
    /// `properties.reply-to`
    pub reply_to: Option<String>,
    /// `properties.subject` (Label)
    pub label: Option<String>,
    /// `properties.group-id` (SessionId)
    pub session_id: Option<String>,
    /// `properties.reply-to-group-id`
    pub reply_to_session_id: Option<String>,
    /// `properties.content-type`
    pub content_type: Option<String>,
    /// Application properties that must be present with these values (compared as strings).
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// Everything the emulator serves: one namespace with its entities.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamespaceConfig {
    /// Namespace name (informational; the official emulator only accepts `sbemulatorns`).
    pub name: String,
    /// Queues.
    pub queues: Vec<QueueConfig>,
    /// Topics.
    pub topics: Vec<TopicConfig>,
}

impl NamespaceConfig {
    /// Parses a `Config.json` document in the official emulator's format.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let file: raw::ConfigFile = serde_json::from_str(text)?;
        let namespace = file
            .user_config
            .namespaces
            .into_iter()
            .next()
            .ok_or(ConfigError::NoNamespace)?;
        let queues = namespace
            .queues
            .into_iter()
            .map(raw::Queue::into_config)
            .collect::<Result<_, _>>()?;
        let topics = namespace
            .topics
            .into_iter()
            .map(raw::Topic::into_config)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: namespace.name,
            queues,
            topics,
        })
    }

    /// Reads and parses a `Config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }
}

/// Parses an ISO 8601 duration as used by Config.json (`PT1M`, `PT20S`, `P1DT2H`, `PT0.5S`).
/// Years and months are rejected because their length is ambiguous.
pub fn parse_iso8601_duration(text: &str) -> Result<Duration, ConfigError> {
    let invalid = || ConfigError::Duration(text.to_string());
    let rest = text.strip_prefix('P').ok_or_else(invalid)?;
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    let mut in_time = false;
    let mut number = String::new();
    for c in rest.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' => number.push(c),
            unit => {
                let value: f64 = number.parse().map_err(|_| invalid())?;
                number.clear();
                let seconds = match (in_time, unit) {
                    (false, 'W') => 7.0 * 86_400.0,
                    (false, 'D') => 86_400.0,
                    (true, 'H') => 3_600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    _ => return Err(invalid()),
                };
                total += value * seconds;
            }
        }
    }
    if !number.is_empty() {
        return Err(invalid());
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

/// Serde mirror of the JSON document; converted into the public types above.
mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::{
        CorrelationFilter, DuplicateDetection, EntityProperties, QueueConfig, RuleConfig,
        RuleFilter, SubscriptionConfig, TopicConfig, parse_iso8601_duration,
    };
    use crate::error::ConfigError;

    #[derive(Deserialize)]
    pub(super) struct ConfigFile {
        #[serde(rename = "UserConfig")]
        pub user_config: UserConfig,
    }

    #[derive(Deserialize)]
    pub(super) struct UserConfig {
        #[serde(rename = "Namespaces", default)]
        pub namespaces: Vec<Namespace>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct Namespace {
        pub name: String,
        #[serde(default)]
        pub queues: Vec<Queue>,
        #[serde(default)]
        pub topics: Vec<Topic>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    pub(super) struct Properties {
        dead_lettering_on_message_expiration: Option<bool>,
        default_message_time_to_live: Option<String>,
        duplicate_detection_history_time_window: Option<String>,
        forward_dead_lettered_messages_to: Option<String>,
        forward_to: Option<String>,
        lock_duration: Option<String>,
        max_delivery_count: Option<u32>,
        requires_duplicate_detection: Option<bool>,
        requires_session: Option<bool>,
    }

    fn non_empty(value: Option<String>) -> Option<String> {
        value.filter(|v| !v.trim().is_empty())
    }

    impl Properties {
        fn entity(&self) -> Result<EntityProperties, ConfigError> {
            let defaults = EntityProperties::default();
            Ok(EntityProperties {
                lock_duration: match &self.lock_duration {
                    Some(d) => parse_iso8601_duration(d)?,
                    None => defaults.lock_duration,
                },
                max_delivery_count: self
                    .max_delivery_count
                    .unwrap_or(defaults.max_delivery_count),
                requires_session: self.requires_session.unwrap_or(false),
                default_message_ttl: match &self.default_message_time_to_live {
                    Some(d) => parse_iso8601_duration(d)?,
                    None => defaults.default_message_ttl,
                },
                dead_lettering_on_message_expiration: self
                    .dead_lettering_on_message_expiration
                    .unwrap_or(false),
                forward_to: non_empty(self.forward_to.clone()),
                forward_dead_lettered_messages_to: non_empty(
                    self.forward_dead_lettered_messages_to.clone(),
                ),
            })
        }

        fn duplicate_detection(&self) -> Result<DuplicateDetection, ConfigError> {
            let defaults = DuplicateDetection::default();
            Ok(DuplicateDetection {
                enabled: self.requires_duplicate_detection.unwrap_or(false),
                window: match &self.duplicate_detection_history_time_window {
                    Some(d) => parse_iso8601_duration(d)?,
                    None => defaults.window,
                },
            })
        }
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct Queue {
        name: String,
        #[serde(default)]
        properties: Properties,
    }

    impl Queue {
        pub(super) fn into_config(self) -> Result<QueueConfig, ConfigError> {
            Ok(QueueConfig {
                properties: self.properties.entity()?,
                duplicate_detection: self.properties.duplicate_detection()?,
                name: self.name,
            })
        }
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct Topic {
        name: String,
        #[serde(default)]
        properties: Properties,
        #[serde(default)]
        subscriptions: Vec<Subscription>,
    }

    impl Topic {
        pub(super) fn into_config(self) -> Result<TopicConfig, ConfigError> {
            Ok(TopicConfig {
                default_message_ttl: self
                    .properties
                    .default_message_time_to_live
                    .as_deref()
                    .map(parse_iso8601_duration)
                    .transpose()?,
                duplicate_detection: self.properties.duplicate_detection()?,
                subscriptions: self
                    .subscriptions
                    .into_iter()
                    .map(Subscription::into_config)
                    .collect::<Result<_, _>>()?,
                name: self.name,
            })
        }
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub(super) struct Subscription {
        name: String,
        #[serde(default)]
        properties: Properties,
        #[serde(default)]
        rules: Vec<Rule>,
    }

    impl Subscription {
        fn into_config(self) -> Result<SubscriptionConfig, ConfigError> {
            Ok(SubscriptionConfig {
                properties: self.properties.entity()?,
                rules: self
                    .rules
                    .into_iter()
                    .map(Rule::into_config)
                    .collect::<Result<_, _>>()?,
                name: self.name,
            })
        }
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Rule {
        name: String,
        properties: RuleProperties,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct RuleProperties {
        filter_type: String,
        correlation_filter: Option<CorrelationFilter>,
        sql_filter: Option<SqlFilter>,
        #[allow(dead_code)]
        action: Option<BTreeMap<String, serde_json::Value>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct SqlFilter {
        sql_expression: String,
    }

    impl Rule {
        fn into_config(self) -> Result<RuleConfig, ConfigError> {
            let filter = match self.properties.filter_type.as_str() {
                "Correlation" => RuleFilter::Correlation(
                    self.properties
                        .correlation_filter
                        .ok_or_else(|| ConfigError::Rule(self.name.clone()))?,
                ),
                "Sql" => RuleFilter::Sql(
                    self.properties
                        .sql_filter
                        .ok_or_else(|| ConfigError::Rule(self.name.clone()))?
                        .sql_expression,
                ),
                _ => return Err(ConfigError::Rule(self.name)),
            };
            Ok(RuleConfig {
                name: self.name,
                filter,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_iso_durations() {
        assert_eq!(
            parse_iso8601_duration("PT1M").unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            parse_iso8601_duration("PT20S").unwrap(),
            Duration::from_secs(20)
        );
        assert_eq!(
            parse_iso8601_duration("P1DT1H").unwrap(),
            Duration::from_secs(90_000)
        );
        assert_eq!(
            parse_iso8601_duration("PT0.5S").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_iso8601_duration("1M").is_err());
        assert!(parse_iso8601_duration("P1M").is_err());
        assert!(parse_iso8601_duration("PT5").is_err());
    }

    #[test]
    fn parses_sample_config() {
        let text = include_str!("../config/Config.json");
        let ns = NamespaceConfig::from_json(text).unwrap();
        assert_eq!(ns.name, "sbemulatorns");
        assert_eq!(ns.queues[0].name, "queue.1");
        assert_eq!(ns.queues[0].properties.max_delivery_count, 3);
        let sub = &ns.topics[0].subscriptions[0];
        assert_eq!(sub.rules.len(), 2);
        match &sub.rules[0].filter {
            RuleFilter::Correlation(f) => {
                assert_eq!(f.content_type.as_deref(), Some("application/text"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
