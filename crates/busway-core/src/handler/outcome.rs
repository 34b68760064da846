//! What a handler's return value means for the delivery.

use super::HandlerError;
use crate::dead_letter::DeadLetterReason;

/// Turns what a handler returns into the attempt's result.
///
/// - `()`: done (acknowledged);
/// - `Result<(), E>` with `E: Into<HandlerError>`: done, or the error's verdict (a plain
///   [`HandlerError`] says transient or permanent; a busway [`Error`](crate::Error) keeps its
///   classification);
/// - [`Outcome`]: an explicit choice.
pub trait IntoOutcome {
    /// The attempt's result.
    fn into_outcome(self) -> Result<(), HandlerError>;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> IntoOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

/// An explicit verdict, for handlers that decide what happens to the message themselves.
///
/// ```
/// use busway_core::{Json, Outcome};
///
/// #[derive(serde::Deserialize)]
/// struct Payment { amount: i64 }
///
/// async fn pay(Json(p): Json<Payment>) -> Outcome {
///     match p.amount {
///         a if a <= 0 => Outcome::dead_letter("invalid_amount", format!("amount {a} is not positive")),
///         a if a > 10_000 => Outcome::retry("the fraud check is busy"),
///         _ => Outcome::Done,
///     }
/// }
/// # let _ = pay;
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Handled: acknowledge.
    Done,
    /// Try again: retried in process, then redelivered, per the consumer's policies.
    Retry(HandlerError),
    /// Give up: dead-letter at once.
    DeadLetter(HandlerError),
}

impl Outcome {
    /// Try again later (a transient failure).
    pub fn retry(why: impl Into<crate::error::BoxError>) -> Self {
        Self::Retry(HandlerError::transient(why))
    }

    /// Dead-letter now, with `reason` as the dead letter's reason code.
    pub fn dead_letter(reason: &str, why: impl Into<crate::error::BoxError>) -> Self {
        Self::DeadLetter(HandlerError::permanent(why).with_reason(DeadLetterReason::parse(reason)))
    }
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Result<(), HandlerError> {
        match self {
            Self::Done => Ok(()),
            Self::Retry(e) => Err(if e.is_transient() {
                e
            } else {
                HandlerError::transient(e)
            }),
            Self::DeadLetter(e) if e.is_transient() => Err(HandlerError::permanent(e)),
            Self::DeadLetter(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn outcomes_map_to_verdicts() {
        assert!(().into_outcome().is_ok());
        assert!(Ok::<(), HandlerError>(()).into_outcome().is_ok());
        let e = Err::<(), _>(crate::Error::Timeout("x".into()))
            .into_outcome()
            .unwrap_err();
        assert!(e.is_transient());
        let e = Outcome::dead_letter("invalid_amount", "no")
            .into_outcome()
            .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(
            e.reason().map(DeadLetterReason::as_str),
            Some("invalid_amount")
        );
        let e = Outcome::Retry(HandlerError::permanent("x"))
            .into_outcome()
            .unwrap_err();
        assert!(e.is_transient(), "a retry is transient whatever it wraps");
    }
}
