//! Turning a handler's outcome into a settlement (ack, redeliver later, or dead-letter), and
//! seeing the settlement through when the broker does not take it at first.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::Stats;
use super::runtime::Settings;
use super::supervise::Pause;
use crate::dead_letter::{DeadLetterMetadata, DeadLetterReason, MAX_ERROR_LEN, truncate};
use crate::delivery::{DeliveryInfo, Settle, Settlement};
use crate::error::Error;
use crate::handler::HandlerError;
use crate::message::Message;
use crate::policy::RedeliveryPolicy;

/// Tries of one settlement whose failures are transient, before falling back.
const SETTLE_TRIES: u32 = 5;
/// The shortest wait before a message whose dead letter could not be written comes back.
const DEAD_LETTER_RETRY_FLOOR: Duration = Duration::from_secs(1);

/// What the alert hook is told about each dead-lettered message.
#[derive(Clone, Debug)]
pub struct DeadLetterAlert {
    /// Id of the dead-lettered message.
    pub message_id: String,
    /// Its CloudEvents type.
    pub message_type: String,
    /// Why, where from, how many attempts, when.
    pub metadata: DeadLetterMetadata,
}

/// Called on every dead-lettering, once the dead letter is written, after the metric and the
/// WARN event.
pub type AlertHook = Arc<dyn Fn(&DeadLetterAlert) + Send + Sync>;

/// Decides what happens to a delivery after its handler ran.
pub(crate) fn decide(
    result: Result<(), HandlerError>,
    info: &DeliveryInfo,
    redelivery: &RedeliveryPolicy,
) -> Settlement {
    let error = match result {
        Ok(()) => return Settlement::Ack,
        Err(e) => e,
    };
    if !error.is_transient() {
        let reason = error
            .reason()
            .cloned()
            .unwrap_or(DeadLetterReason::PermanentError);
        return dead_letter(info, reason, &error.to_string());
    }
    if info.attempt >= redelivery.max_deliveries {
        // A failure that says why (a panic) names the reason; others just ran out of attempts.
        let reason = error
            .reason()
            .cloned()
            .unwrap_or(DeadLetterReason::MaxAttemptsExceeded);
        return dead_letter(info, reason, &error.to_string());
    }
    Settlement::Redeliver {
        delay: redelivery.delay_after(info.attempt),
        first_failure: info.first_failure.unwrap_or_else(Utc::now),
    }
}

/// A dead-letter settlement with the standard metadata.
pub(crate) fn dead_letter(
    info: &DeliveryInfo,
    reason: DeadLetterReason,
    error: &str,
) -> Settlement {
    let now = Utc::now();
    Settlement::DeadLetter(Box::new(DeadLetterMetadata {
        reason,
        error: truncate(error, MAX_ERROR_LEN).to_owned(),
        original_topic: info.topic.clone(),
        group: info.group.clone(),
        attempts: info.attempt,
        first_failure: info.first_failure.unwrap_or(now),
        last_failure: now,
    }))
}

/// Settles a delivery, retrying transient failures; returns whether the intended settlement
/// was taken.
///
/// When it cannot be completed the message must neither be lost nor hold up its queue or
/// partition: a dead letter that cannot be written is redelivered later instead (attempt
/// counted, so it is dead-lettered again when it fails again); anything else is given back to
/// the broker by dropping the handle. The dead-letter metric, WARN and alert fire once, after
/// the dead letter is written.
pub(crate) async fn settle(
    mut handle: Box<dyn Settle>,
    settlement: Settlement,
    message: &Message,
    info: &DeliveryInfo,
    settings: &Settings,
    stats: &Stats,
) -> bool {
    match settle_with_retries(handle.as_mut(), &settlement).await {
        Ok(()) => {
            match &settlement {
                Settlement::Ack => Stats::bump(&stats.acked),
                Settlement::Redeliver { .. } => Stats::bump(&stats.redelivered),
                Settlement::DeadLetter(meta) => {
                    Stats::bump(&stats.dead_lettered);
                    announce_dead_letter(message, meta, settings.alert.as_ref());
                }
            }
            return true;
        }
        Err(e) => settle_failed(message, info, &settlement, &e, stats),
    }
    if let Settlement::DeadLetter(meta) = &settlement {
        let delay = settings
            .redelivery
            .delay_after(info.attempt)
            .max(DEAD_LETTER_RETRY_FLOOR);
        let fallback = Settlement::Redeliver {
            delay,
            first_failure: meta.first_failure,
        };
        match settle_with_retries(handle.as_mut(), &fallback).await {
            Ok(()) => {
                Stats::bump(&stats.redelivered);
                tracing::warn!(
                    message.id = message.id(),
                    ?delay,
                    "the dead letter could not be written; the message comes back later"
                );
                return false;
            }
            Err(e) => settle_failed(message, info, &fallback, &e, stats),
        }
    }
    // Dropping the handle gives the message back to the broker, attempt counted.
    drop(handle);
    false
}

async fn settle_with_retries(
    handle: &mut dyn Settle,
    settlement: &Settlement,
) -> Result<(), Error> {
    let mut pause = Pause::new();
    let mut tries = 0;
    loop {
        tries += 1;
        match handle.settle(settlement).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && tries < SETTLE_TRIES => {
                let wait = pause.next();
                tracing::warn!(error = %e, tries, retry_in = ?wait, "settlement failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn settle_failed(
    message: &Message,
    info: &DeliveryInfo,
    settlement: &Settlement,
    error: &Error,
    stats: &Stats,
) {
    let kind = match settlement {
        Settlement::Ack => "ack",
        Settlement::Redeliver { .. } => "redeliver",
        Settlement::DeadLetter(_) => "dead_letter",
    };
    Stats::bump(&stats.settle_failures);
    metrics::counter!(
        "busway_settle_failures_total",
        "topic" => info.topic.clone(),
        "group" => info.group.clone(),
        "settlement" => kind,
    )
    .increment(1);
    tracing::error!(
        error = %error,
        message.id = message.id(),
        topic = %info.topic,
        group = %info.group,
        attempt = info.attempt,
        settlement = kind,
        "settlement failed"
    );
}

/// Emits the metric, the WARN event and the alert for a dead-lettering.
pub(crate) fn announce_dead_letter(
    message: &Message,
    metadata: &DeadLetterMetadata,
    hook: Option<&AlertHook>,
) {
    metrics::counter!(
        "busway_dead_lettered_total",
        "topic" => metadata.original_topic.clone(),
        "group" => metadata.group.clone(),
        "reason" => metadata.reason.as_str().to_owned(),
    )
    .increment(1);
    tracing::warn!(
        message.id = message.id(),
        message.type = message.ty(),
        topic = %metadata.original_topic,
        group = %metadata.group,
        reason = %metadata.reason,
        attempts = metadata.attempts,
        error = %metadata.error,
        "message dead-lettered"
    );
    if let Some(hook) = hook {
        let alert = DeadLetterAlert {
            message_id: message.id().to_owned(),
            message_type: message.ty().to_owned(),
            metadata: metadata.clone(),
        };
        // A panicking hook must not take the delivery down with it.
        if std::panic::catch_unwind(AssertUnwindSafe(|| hook(&alert))).is_err() {
            tracing::error!(message.id = message.id(), "dead-letter alert hook panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::policy::Backoff;

    fn info(attempt: u32) -> DeliveryInfo {
        DeliveryInfo::new("orders", "billing", attempt)
    }

    fn policy() -> RedeliveryPolicy {
        RedeliveryPolicy::new(
            3,
            Backoff::Exponential {
                initial: Duration::from_secs(1),
                factor: 2.0,
                max_delay: Duration::from_secs(60),
                jitter: false,
            },
        )
    }

    #[test]
    fn transient_failures_redeliver_with_growing_delay_until_the_last_attempt() {
        let first = decide(Err(HandlerError::transient("x")), &info(1), &policy());
        assert!(
            matches!(first, Settlement::Redeliver { delay, .. } if delay == Duration::from_secs(1))
        );
        let second = decide(Err(HandlerError::transient("x")), &info(2), &policy());
        assert!(
            matches!(second, Settlement::Redeliver { delay, .. } if delay == Duration::from_secs(2))
        );
        let Settlement::DeadLetter(meta) =
            decide(Err(HandlerError::transient("x")), &info(3), &policy())
        else {
            panic!("third failure must dead-letter");
        };
        assert_eq!(meta.reason, DeadLetterReason::MaxAttemptsExceeded);
        assert_eq!(meta.attempts, 3);
    }

    #[test]
    fn permanent_failures_dead_letter_at_once_with_complete_metadata() {
        let mut i = info(1);
        let first_failure = Utc::now() - chrono::Duration::seconds(30);
        i.first_failure = Some(first_failure);
        let Settlement::DeadLetter(meta) = decide(
            Err(HandlerError::permanent("order 0 does not exist")),
            &i,
            &policy(),
        ) else {
            panic!("permanent failure must dead-letter");
        };
        assert_eq!(meta.reason, DeadLetterReason::PermanentError);
        assert!(meta.error.contains("order 0 does not exist"));
        assert_eq!(meta.original_topic, "orders");
        assert_eq!(meta.group, "billing");
        assert_eq!(meta.attempts, 1);
        assert_eq!(meta.first_failure, first_failure);
        assert!(meta.last_failure >= first_failure);
        let Settlement::DeadLetter(meta) =
            decide(Err(HandlerError::undecodable("bad json")), &i, &policy())
        else {
            panic!("undecodable must dead-letter");
        };
        assert_eq!(meta.reason, DeadLetterReason::Undecodable);
    }

    #[test]
    fn ok_acks() {
        assert_eq!(decide(Ok(()), &info(7), &policy()), Settlement::Ack);
    }
}
