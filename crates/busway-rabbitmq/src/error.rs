//! Classifying lapin's errors into busway's [`Error`] kinds, so callers can tell an outage
//! (retry later) from bad credentials or a topology conflict (fix the setup).

use busway_core::Error;
use lapin::ErrorKind as LapinKind;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

/// Maps a lapin error met while doing `what` (e.g. "publishing to topic `orders`").
pub(crate) fn classify(error: lapin::Error, what: &str) -> Error {
    match error.kind() {
        LapinKind::ProtocolError(amqp) => {
            let text = format!("{what}: {} ({})", amqp.get_message(), amqp.get_id());
            match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => Error::Auth(text),
                // Declaring something that exists with other arguments: a setup conflict.
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
                    if amqp.get_message().as_str().contains("inequivalent arg") =>
                {
                    Error::config(
                        "rabbitmq topology",
                        format!(
                            "{text}; an existing exchange or queue was declared with other arguments"
                        ),
                    )
                }
                // Otherwise the broker refused what was sent (e.g. over its max_message_size).
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => Error::Rejected(text),
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => Error::Unroutable(text),
                AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE)
                | AMQPErrorKind::Hard(AMQPHardError::FRAMEERROR) => Error::Rejected(text),
                AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED) => {
                    Error::broker(text, true, error)
                }
                // CONNECTION_FORCED (broker shutdown, `close_connection`), INTERNAL_ERROR,
                // RESOURCE_ERROR…: the connection is gone or going; it will be re-established.
                AMQPErrorKind::Hard(_) => Error::connection(text, error),
                AMQPErrorKind::Soft(_) => Error::broker(text, false, error),
            }
        }
        LapinKind::AuthProviderError(reason) => Error::Auth(format!("{what}: {reason}")),
        LapinKind::ParsingError(_)
        | LapinKind::SerialisationError(_)
        | LapinKind::InvalidProtocolVersion(_) => {
            Error::broker(format!("{what}: protocol failure"), false, error)
        }
        // IO errors, missing heartbeats, closed channels or connections, channel limits: an
        // outage or its aftermath, transient by nature.
        _ => Error::connection(format!("{what}: {error}"), error),
    }
}

/// Whether `error` says an entity does not exist (a passive declare of a missing queue).
pub(crate) fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), LapinKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use busway_core::ErrorKind;
    use lapin::protocol::AMQPError;

    fn protocol(kind: AMQPErrorKind) -> lapin::Error {
        LapinKind::ProtocolError(AMQPError::new(kind, "reply text".into())).into()
    }

    #[test]
    fn classification() {
        let auth = classify(
            protocol(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)),
            "connecting",
        );
        assert_eq!(auth.kind(), ErrorKind::Auth);
        let forced = classify(
            protocol(AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)),
            "publishing",
        );
        assert_eq!(forced.kind(), ErrorKind::Connection);
        assert!(forced.is_transient());
        let refused = classify(
            protocol(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)),
            "publishing",
        );
        assert_eq!(refused.kind(), ErrorKind::Rejected);
        assert!(refused.to_string().contains("reply text"));
        let conflict: lapin::Error = LapinKind::ProtocolError(AMQPError::new(
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED),
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q'".into(),
        ))
        .into();
        assert_eq!(classify(conflict, "declaring").kind(), ErrorKind::Config);
        let io = classify(
            lapin::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            "publishing",
        );
        assert!(io.is_transient());
    }
}
