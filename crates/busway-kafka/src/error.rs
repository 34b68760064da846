//! Classifying librdkafka errors into busway's [`Error`] kinds.

use busway_core::Error;
use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

use crate::config::{KafkaConfig, is_secret_property};

/// Converts an error met while creating a librdkafka client into a busway error that names the
/// setting at fault but quotes none of `config`'s secrets: librdkafka's own text repeats the
/// value it refused, and may quote parts of a secret setting it could not parse.
pub(crate) fn creating(config: &KafkaConfig, what: &str, e: KafkaError) -> Error {
    match e {
        KafkaError::ClientConfig(_, description, key, _value) => {
            let detail = if is_secret_property(&key) {
                "its value was refused (not shown: the setting may hold a secret)".to_owned()
            } else {
                description
            };
            Error::config(
                "kafka",
                config.scrub(&format!("{what}: setting `{key}`: {detail}")),
            )
        }
        KafkaError::ClientCreation(text) => {
            Error::config("kafka", config.scrub(&format!("{what}: {text}")))
        }
        other => classify(what, other),
    }
}

/// Converts a librdkafka error met while doing `what` into a classified busway error.
pub(crate) fn classify(what: &str, e: KafkaError) -> Error {
    let message = format!("{what}: {e}");
    match &e {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => {
            Error::config("kafka", message)
        }
        KafkaError::Canceled => Error::Closed(message),
        _ => match e.rdkafka_error_code() {
            Some(code) => classify_code(message, code, e),
            None => Error::broker(message, false, e),
        },
    }
}

fn classify_code(message: String, code: Code, e: KafkaError) -> Error {
    match code {
        Code::MessageTimedOut | Code::OperationTimedOut | Code::RequestTimedOut => {
            Error::Timeout(message)
        }
        Code::BrokerTransportFailure
        | Code::AllBrokersDown
        | Code::NetworkException
        | Code::Resolve
        | Code::BrokerNotAvailable => Error::connection(message, e),
        Code::Authentication
        | Code::SaslAuthenticationFailed
        | Code::TopicAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::IllegalSASLState
        | Code::UnsupportedSASLMechanism
        | Code::SSL => Error::Auth(message),
        Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::UnknownPartition => {
            Error::Unroutable(message)
        }
        Code::MessageSizeTooLarge | Code::InvalidRecord | Code::InvalidMessage => {
            Error::Rejected(message)
        }
        Code::InvalidConfig | Code::InvalidArgument | Code::InvalidRequest => {
            Error::config("kafka", message)
        }
        Code::BrokerDestroy | Code::DestroyBroker => Error::Closed(message),
        Code::QueueFull
        | Code::LeaderNotAvailable
        | Code::NotLeaderForPartition
        | Code::NotEnoughReplicas
        | Code::NotEnoughReplicasAfterAppend
        | Code::NotCoordinator
        | Code::CoordinatorNotAvailable
        | Code::CoordinatorLoadInProgress
        | Code::RebalanceInProgress
        | Code::UnknownMemberId
        | Code::IllegalGeneration
        | Code::KafkaStorageError
        | Code::ThrottlingQuotaExceeded
        | Code::OutOfOrderSequenceNumber
        | Code::UnknownProducerId
        | Code::InvalidProducerEpoch
        | Code::Fatal
        | Code::Retry
        | Code::WaitingForCoordinator
        | Code::PartitionEOF => Error::broker(message, true, e),
        _ => Error::broker(message, false, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use busway_core::ErrorKind;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn codes_map_to_kinds() {
        let kind = |code| classify("x", KafkaError::MessageProduction(code)).kind();
        assert_eq!(kind(RDKafkaErrorCode::MessageTimedOut), ErrorKind::Timeout);
        assert_eq!(
            kind(RDKafkaErrorCode::AllBrokersDown),
            ErrorKind::Connection
        );
        assert_eq!(
            kind(RDKafkaErrorCode::SaslAuthenticationFailed),
            ErrorKind::Auth
        );
        assert_eq!(
            kind(RDKafkaErrorCode::UnknownTopicOrPartition),
            ErrorKind::Unroutable
        );
        assert_eq!(
            kind(RDKafkaErrorCode::MessageSizeTooLarge),
            ErrorKind::Rejected
        );
        assert!(
            classify(
                "x",
                KafkaError::MessageProduction(RDKafkaErrorCode::NotLeaderForPartition)
            )
            .is_transient()
        );
        assert_eq!(
            classify("x", KafkaError::Canceled).kind(),
            ErrorKind::Closed
        );
    }
}
