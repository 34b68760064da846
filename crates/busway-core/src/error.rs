//! Errors of the broker-facing API, classified so callers can decide what to do without string matching.

use std::fmt;

/// A boxed error from any source: broker clients, serde, user code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for busway operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is; stable across brokers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The broker could not be reached or the connection was lost.
    Connection,
    /// An operation did not complete in time.
    Timeout,
    /// Credentials were refused.
    Auth,
    /// A configuration value is missing or invalid.
    Config,
    /// A message or value could not be encoded or decoded.
    Serialization,
    /// A message does not satisfy the CloudEvents rules or a schema.
    InvalidMessage,
    /// The broker refused the message (negative confirm, quota, policy).
    Rejected,
    /// No queue or subscription exists for the message.
    Unroutable,
    /// The message exceeds the configured or broker size limit.
    TooLarge,
    /// The broker does not offer the requested capability.
    Unsupported,
    /// The client, subscription or broker has been closed.
    Closed,
    /// Any other broker failure.
    Broker,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Auth => "auth",
            Self::Config => "config",
            Self::Serialization => "serialization",
            Self::InvalidMessage => "invalid_message",
            Self::Rejected => "rejected",
            Self::Unroutable => "unroutable",
            Self::TooLarge => "too_large",
            Self::Unsupported => "unsupported",
            Self::Closed => "closed",
            Self::Broker => "broker",
        };
        f.write_str(s)
    }
}

/// The error type of publishers, subscribers, dead-letter stores and configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker could not be reached or the connection was lost.
    #[error("connection error: {message}")]
    Connection {
        /// What happened.
        message: String,
        /// The underlying client error.
        #[source]
        source: Option<BoxError>,
    },
    /// An operation did not complete in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Credentials were refused.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A configuration value is missing or invalid; `field` names it.
    #[error("invalid configuration `{field}`: {reason}")]
    Config {
        /// The dotted path of the offending setting, e.g. `rabbitmq.url`.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A message or value could not be encoded or decoded.
    #[error("serialization error: {message}")]
    Serialization {
        /// What could not be (de)serialized.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A message does not satisfy the CloudEvents rules or a schema.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The broker refused the message.
    #[error("message rejected by the broker: {0}")]
    Rejected(String),
    /// Nothing would receive the message.
    #[error("message is unroutable: {0}")]
    Unroutable(String),
    /// The message is larger than allowed; it was not sent.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size of the message.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The broker does not offer the requested capability.
    #[error("not supported by this broker: {0}")]
    Unsupported(String),
    /// The client, subscription or broker has been closed.
    #[error("closed: {0}")]
    Closed(String),
    /// Any other broker failure; `transient` says whether retrying may succeed.
    #[error("broker error: {message}")]
    Broker {
        /// What happened.
        message: String,
        /// Whether the same call may succeed later.
        transient: bool,
        /// The underlying client error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// A connection error with its cause.
    pub fn connection(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Connection {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A configuration error naming the offending field.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A serialization error with its cause.
    pub fn serialization(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Serialization {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A broker error, transient or not, with its cause.
    pub fn broker(
        message: impl Into<String>,
        transient: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Broker {
            message: message.into(),
            transient,
            source: Some(source.into()),
        }
    }

    /// The classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connection { .. } => ErrorKind::Connection,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::Auth(_) => ErrorKind::Auth,
            Self::Config { .. } => ErrorKind::Config,
            Self::Serialization { .. } => ErrorKind::Serialization,
            Self::InvalidMessage(_) => ErrorKind::InvalidMessage,
            Self::Rejected(_) => ErrorKind::Rejected,
            Self::Unroutable(_) => ErrorKind::Unroutable,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::Closed(_) => ErrorKind::Closed,
            Self::Broker { .. } => ErrorKind::Broker,
        }
    }

    /// Whether retrying the same operation later may succeed.
    ///
    /// Connection loss and timeouts are transient; bad input, bad configuration and refused
    /// credentials are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connection { .. } | Self::Timeout(_) => true,
            Self::Broker { transient, .. } => *transient,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_separates_transient_from_permanent() {
        assert!(Error::Timeout("publish".into()).is_transient());
        assert!(Error::connection("lost", "reset by peer").is_transient());
        assert!(!Error::TooLarge { size: 2, limit: 1 }.is_transient());
        assert!(!Error::config("kafka.bootstrap", "empty").is_transient());
        assert_eq!(Error::Unroutable("x".into()).kind(), ErrorKind::Unroutable);
    }

    #[test]
    fn config_error_names_the_field() {
        let e = Error::config("rabbitmq.url", "scheme must be amqp or amqps");
        assert_eq!(
            e.to_string(),
            "invalid configuration `rabbitmq.url`: scheme must be amqp or amqps"
        );
    }
}
