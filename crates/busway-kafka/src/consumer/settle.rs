//! Settling a Kafka delivery: ack marks its offset done; a redelivery or dead letter is first
//! produced (and confirmed) to the group's retry or DLQ topic, then the offset is done.

use std::sync::Arc;

use async_trait::async_trait;
use busway_core::{Result, Settle, Settlement};
use chrono::Utc;

use super::context::Plan;
use super::state::{Shared, Tp};
use crate::codec::{InRecord, redelivery_headers};
use crate::names;
use crate::producer::Producer;

/// What every settlement handle of a subscription shares.
pub(crate) struct SettleContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) plan: Arc<Plan>,
    pub(crate) producer: Arc<Producer>,
}

pub(crate) struct KafkaSettle {
    pub(crate) ctx: Arc<SettleContext>,
    pub(crate) tp: Tp,
    pub(crate) generation: u64,
    pub(crate) record: InRecord,
    pub(crate) attempt: u32,
}

#[async_trait]
impl Settle for KafkaSettle {
    async fn settle(&mut self, settlement: &Settlement) -> Result<()> {
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
                let topic = names::retry(&plan.topic, &plan.group, tier);
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
                let topic = names::dlq(&plan.topic, &plan.group);
                let mut record = self.record.original();
                for (k, v) in meta.to_headers() {
                    record.add_header(k, Some(v.as_bytes()));
                }
                self.ctx.producer.send(&topic, record).await?;
            }
        }
        self.ctx
            .shared
            .done(&self.tp, self.generation, self.record.offset);
        Ok(())
    }
}

impl Drop for KafkaSettle {
    /// Settled or not, the delivery is no longer outstanding. An unsettled one is simply never
    /// marked done, so its offset is not committed and it is read again after a restart or
    /// rebalance.
    fn drop(&mut self) {
        self.ctx.shared.release();
    }
}
