//! Classifying azservicebus errors into busway's [`Error`] kinds.
//!
//! The client reports Service Bus conditions (AMQP error conditions, `$management` status codes)
//! inside `azure_core::Error` messages, so classification reads the rendered error.

use busway_core::Error;

/// Classifies a client error from `operation` on `entity`.
pub(crate) fn classify(operation: &str, entity: &str, err: azure_core::Error) -> Error {
    let rendered = format!("{err:?} {err}");
    let text = rendered.to_ascii_lowercase();
    let what = format!("{operation} on `{entity}` failed: {err}");
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if matches!(err.kind(), azure_core::error::ErrorKind::Credential)
        || has(&["unauthorized", "401", "put-token", "authorization failed"])
    {
        return Error::Auth(what);
    }
    if has(&["message-size-exceeded", "messagesizeexceeded"]) {
        return Error::Rejected(what);
    }
    if has(&[
        "not-found",
        "notfound",
        "messagingentitynotfound",
        "404",
        "could not be found",
    ]) {
        return Error::Unroutable(what);
    }
    if has(&["resource-limit-exceeded", "quotaexceeded"]) {
        return Error::broker(what, true, err);
    }
    if has(&["timeout", "timed out", "elapsed", "408"]) {
        return Error::Timeout(what);
    }
    if has(&["lock-lost", "lost", "410", "session-cannot-be-locked"]) {
        return Error::broker(what, false, err);
    }
    if matches!(err.kind(), azure_core::error::ErrorKind::Io)
        || has(&[
            "connection",
            "io error",
            "broken pipe",
            "reset by peer",
            "refused",
        ])
    {
        return Error::connection(what, err);
    }
    if has(&[
        "not-allowed",
        "notallowed",
        "400",
        "invalid-field",
        "decode-error",
    ]) {
        return Error::Rejected(what);
    }
    Error::broker(what, true, err)
}

/// Whether the broker answered that a message lock is gone (the message was settled, or its
/// lock expired).
pub(crate) fn is_lock_lost(err: &azure_core::Error) -> bool {
    let text = format!("{err:?} {err}").to_ascii_lowercase();
    [
        "lock-lost",
        "locklost",
        "lock lost",
        "410",
        "lock supplied is invalid",
    ]
    .iter()
    .any(|n| text.contains(n))
}
