//! Failures reported to clients: a `$management` status or an AMQP error condition.

/// A failure reported to the client: a `$management` status or an AMQP error condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpError {
    pub status: u16,
    pub condition: &'static str,
    pub description: String,
}

impl OpError {
    pub(super) fn new(
        status: u16,
        condition: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            condition,
            description: description.into(),
        }
    }
    pub fn lock_lost() -> Self {
        Self::new(
            410,
            "com.microsoft:message-lock-lost",
            "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
        )
    }
    pub fn session_lock_lost(id: &str) -> Self {
        Self::new(
            410,
            "com.microsoft:session-lock-lost",
            format!("The session lock has expired on the session '{id}'."),
        )
    }
    pub fn session_cannot_be_locked(id: &str) -> Self {
        Self::new(
            410,
            "com.microsoft:session-cannot-be-locked",
            format!(
                "The requested session '{id}' cannot be accepted. It may be locked by another receiver."
            ),
        )
    }
    pub fn no_session_available() -> Self {
        Self::new(
            408,
            "com.microsoft:timeout",
            "No session available to complete the request.",
        )
    }
    pub fn message_not_found(seq: i64) -> Self {
        Self::new(
            404,
            "com.microsoft:message-not-found",
            format!(
                "Failed to retrieve message with sequence number {seq}. The message may not exist or may not be in the expected state."
            ),
        )
    }
    pub fn entity_not_found(path: &str) -> Self {
        Self::new(
            404,
            "amqp:not-found",
            format!("The messaging entity '{path}' could not be found."),
        )
    }
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(400, "com.microsoft:argument-error", description)
    }
    pub fn not_allowed(description: impl Into<String>) -> Self {
        Self::new(400, "amqp:not-allowed", description)
    }
    pub fn conflict(description: impl Into<String>) -> Self {
        Self::new(409, "com.microsoft:entity-already-exists", description)
    }
    pub fn quota_exceeded(path: &str) -> Self {
        Self::new(
            403,
            "amqp:resource-limit-exceeded",
            format!("The maximum entity size has been reached or exceeded for '{path}'."),
        )
    }
    pub fn message_too_large(size: usize, max: usize) -> Self {
        Self::new(
            413,
            "amqp:link:message-size-exceeded",
            format!("The received message (size {size} bytes) exceeds the limit ({max} bytes)."),
        )
    }
    pub fn server_busy(description: impl Into<String>) -> Self {
        Self::new(503, "com.microsoft:server-busy", description)
    }
    pub fn unauthorized(description: impl Into<String>) -> Self {
        Self::new(401, "amqp:unauthorized-access", description)
    }
}
