//! Settling a Kafka delivery: ack marks its offset done; a redelivery or dead letter is first
//! produced (and confirmed) to the group's retry or DLQ topic, then the offset is done.
//!
//! The handle keeps its record until a settlement succeeds: a failed one leaves the offset in
//! flight (so commits never pass it) and the handle may be settled again. A handle dropped
//! unsettled gives its record back to the driver, which delivers it again, attempt counted,
//! after [`RETURN_PAUSE`](super::driver::RETURN_PAUSE): the partition's commits wait for it,
//! but never for ever.

use std::sync::Arc;

use async_trait::async_trait;
use busway_core::{Error, Result, Settle, Settlement};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::context::Plan;
use super::state::{Shared, Tp};
use crate::codec::{InRecord, redelivery_headers};
use crate::publish::Producer;
use crate::topology;

/// What every settlement handle of a subscription shares.
pub(crate) struct SettleContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) plan: Arc<Plan>,
    pub(crate) producer: Arc<Producer>,
    /// Where a handle dropped unsettled gives its record back.
    pub(crate) returns: mpsc::UnboundedSender<Returned>,
}

/// A record whose handle was dropped unsettled, on its way back to the driver.
pub(crate) struct Returned {
    pub(crate) tp: Tp,
    pub(crate) generation: u64,
    pub(crate) record: InRecord,
    /// The attempt the dropped delivery was; the next one counts it.
    pub(crate) attempt: u32,
    pub(crate) first_failure: Option<DateTime<Utc>>,
}

pub(crate) struct KafkaSettle {
    pub(crate) ctx: Arc<SettleContext>,
    pub(crate) tp: Tp,
    pub(crate) generation: u64,
    pub(crate) record: InRecord,
    pub(crate) attempt: u32,
    pub(crate) first_failure: Option<DateTime<Utc>>,
    /// Set once a settlement succeeded: the record is no longer this handle's.
    pub(crate) settled: bool,
}

impl KafkaSettle {
    /// Fails when the partition went to another member (or this one lost it): the record is
    /// read again by its next owner, so settling it here would deliver it twice.
    fn still_ours(&self) -> Result<()> {
        if self.ctx.shared.is_current(&self.tp, self.generation) {
            return Ok(());
        }
        Err(Error::Closed(format!(
            "partition {} of {} was reassigned before this delivery was settled; its next owner reads the record again",
            self.tp.1, self.tp.0
        )))
    }
}

#[async_trait]
impl Settle for KafkaSettle {
    async fn settle(&mut self, settlement: &Settlement) -> Result<()> {
        if self.settled {
            return Ok(());
        }
        self.still_ours()?;
        let plan = &self.ctx.plan;
        match settlement {
            Settlement::Ack => {}
            Settlement::Redeliver {
                delay,
                first_failure,
            } => {
                // Tier n holds redeliveries after attempt n: within a tier every record waits
                // about as long, so waiting for the head of a partition never delays one behind
                // it that is due sooner.
                let tier = self.attempt.clamp(1, plan.tiers);
                let topic = topology::retry(&plan.topic, &plan.group, tier);
                let due = chrono::Duration::from_std(*delay)
                    .ok()
                    .and_then(|d| Utc::now().checked_add_signed(d))
                    .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
                let mut record = self.record.original();
                redelivery_headers(
                    &mut record,
                    self.attempt.saturating_add(1),
                    *first_failure,
                    due,
                );
                self.ctx.producer.send(&topic, record).await?;
            }
            Settlement::DeadLetter(meta) => {
                let topic = topology::dlq(&plan.topic, &plan.group);
                let mut record = self.record.original();
                for (k, v) in meta.to_headers() {
                    record.add_header(k, Some(v.as_bytes()));
                }
                self.ctx.producer.send(&topic, record).await?;
            }
        }
        // A copy is written; if the partition moved meanwhile, its next owner reads the
        // original again (a duplicate, never a loss).
        if !self
            .ctx
            .shared
            .done(&self.tp, self.generation, self.record.offset)
        {
            tracing::debug!(topic = %self.tp.0, partition = self.tp.1, offset = self.record.offset, "settled after the partition was reassigned");
        }
        self.settled = true;
        Ok(())
    }
}

impl Drop for KafkaSettle {
    /// Settled or not, the delivery is no longer outstanding. An unsettled one gives its record
    /// back to the driver, which delivers it again (its offset stays in flight meanwhile); if
    /// the driver is gone, the record is simply not committed and is read again after a restart
    /// or rebalance.
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.ctx.returns.send(Returned {
                tp: self.tp.clone(),
                generation: self.generation,
                record: self.record.clone(),
                attempt: self.attempt,
                first_failure: self.first_failure,
            });
        }
        self.ctx.shared.release();
    }
}
