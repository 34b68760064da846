//! Sender links, pooled per entity.
//!
//! The client's senders need `&mut` for every send and a send waits for the broker's verdict, so
//! one sender per topic would serialise every publisher of the process; a small pool per entity
//! lets that many sends be in flight at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};

use azservicebus::{
    CreateMessageBatchOptions, ServiceBusMessage, ServiceBusSender, ServiceBusSenderOptions,
};
use busway_core::{Error, Result};
use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::client::SharedClient;
use crate::error::classify;

type Slot = Arc<Mutex<Option<ServiceBusSender>>>;

struct Pool {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

/// Every sender link of a broker.
pub(crate) struct Senders {
    client: SharedClient,
    pools: SyncMutex<HashMap<String, Arc<Pool>>>,
    per_entity: usize,
}

impl Senders {
    pub(crate) fn new(client: SharedClient, per_entity: usize) -> Self {
        Self {
            client,
            pools: SyncMutex::new(HashMap::new()),
            per_entity: per_entity.max(1),
        }
    }

    /// A free sender of `entity` (or the next one in turn when all are busy), opened on first use.
    async fn acquire(&self, entity: &str) -> Result<OwnedMutexGuard<Option<ServiceBusSender>>> {
        let pool = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools
                .entry(entity.to_owned())
                .or_insert_with(|| {
                    Arc::new(Pool {
                        slots: (0..self.per_entity).map(|_| Slot::default()).collect(),
                        next: AtomicUsize::new(0),
                    })
                })
                .clone()
        };
        let free = pool
            .slots
            .iter()
            .find_map(|s| s.clone().try_lock_owned().ok());
        let mut guard = match free {
            Some(g) => g,
            None => {
                let i = pool.next.fetch_add(1, Ordering::Relaxed) % pool.slots.len();
                pool.slots[i].clone().lock_owned().await
            }
        };
        if guard.is_none() {
            let sender = self
                .client
                .lock()
                .await
                .create_sender(entity, ServiceBusSenderOptions::default())
                .await
                .map_err(|e| classify("opening a sender", entity, e))?;
            *guard = Some(sender);
        }
        Ok(guard)
    }

    /// Forgets a sender after a failure, so the next use opens a fresh link.
    async fn discard(guard: &mut OwnedMutexGuard<Option<ServiceBusSender>>) {
        if let Some(sender) = guard.take()
            && let Err(e) = sender.dispose().await
        {
            tracing::debug!(error = %e, "disposing a failed sender");
        }
    }

    /// Sends one message.
    pub(crate) async fn send(&self, entity: &str, message: ServiceBusMessage) -> Result<()> {
        let mut guard = self.acquire(entity).await?;
        let Some(sender) = guard.as_mut() else {
            return Err(Error::Closed("sender".into()));
        };
        match sender.send_message(message).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = classify("publishing", entity, e);
                Self::discard(&mut guard).await;
                Err(err)
            }
        }
    }

    /// Sends messages in as few batches as the batch size limit allows.
    pub(crate) async fn send_batched(
        &self,
        entity: &str,
        messages: Vec<ServiceBusMessage>,
        limit: usize,
    ) -> Result<()> {
        let mut guard = self.acquire(entity).await?;
        let Some(sender) = guard.as_mut() else {
            return Err(Error::Closed("sender".into()));
        };
        let result = send_in_batches(sender, entity, messages, limit).await;
        if result.as_ref().is_err_and(|e| e.is_transient()) {
            Self::discard(&mut guard).await;
        }
        result
    }

    /// Schedules one message for `at`; returns its sequence number.
    pub(crate) async fn schedule(
        &self,
        entity: &str,
        message: ServiceBusMessage,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        let at = to_offset(at);
        let mut guard = self.acquire(entity).await?;
        let Some(sender) = guard.as_mut() else {
            return Err(Error::Closed("sender".into()));
        };
        match sender.schedule_messages(std::iter::once(message), at).await {
            Ok(seq) => seq.first().copied().ok_or_else(|| {
                Error::Rejected(format!(
                    "scheduling on `{entity}` returned no sequence number"
                ))
            }),
            Err(e) => {
                let err = classify("scheduling", entity, e);
                Self::discard(&mut guard).await;
                Err(err)
            }
        }
    }

    /// Disposes every sender.
    pub(crate) async fn close(&self) {
        let pools: Vec<Arc<Pool>> = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.drain().map(|(_, p)| p).collect()
        };
        for pool in pools {
            for slot in &pool.slots {
                let mut guard = slot.clone().lock_owned().await;
                Self::discard(&mut guard).await;
            }
        }
    }
}

async fn send_in_batches(
    sender: &mut ServiceBusSender,
    entity: &str,
    messages: Vec<ServiceBusMessage>,
    limit: usize,
) -> Result<()> {
    let new_batch = |sender: &ServiceBusSender| {
        sender
            .create_message_batch(CreateMessageBatchOptions::default())
            .map_err(|e| Error::Rejected(format!("cannot create a batch for `{entity}`: {e:?}")))
    };
    let mut batch = new_batch(sender)?;
    for message in messages {
        // The link's limit may be larger than the configured one; batches stay within both.
        let fits =
            batch.size_in_bytes() as usize + crate::codec::encoded_size(&message) + 16 <= limit;
        let message = if fits {
            match batch.try_add_message(message) {
                Ok(()) => continue,
                Err(e) => returned(e),
            }
        } else {
            message
        };
        if batch.is_empty() {
            let size = crate::codec::encoded_size(&message);
            return Err(Error::TooLarge { size, limit });
        }
        let full = std::mem::replace(&mut batch, new_batch(sender)?);
        sender
            .send_message_batch(full)
            .await
            .map_err(|e| classify("publishing a batch", entity, e))?;
        if let Err(e) = batch.try_add_message(message) {
            let size = crate::codec::encoded_size(&returned(e));
            return Err(Error::TooLarge { size, limit });
        }
    }
    if !batch.is_empty() {
        sender
            .send_message_batch(batch)
            .await
            .map_err(|e| classify("publishing a batch", entity, e))?;
    }
    Ok(())
}

/// The message a batch refused.
fn returned(e: azservicebus::amqp::error::TryAddMessageError) -> ServiceBusMessage {
    use azservicebus::amqp::error::TryAddMessageError as E;
    match e {
        E::BatchFull(m) | E::Codec { message: m, .. } => m,
    }
}

/// chrono to the `time` crate the client uses.
fn to_offset(at: DateTime<Utc>) -> time::OffsetDateTime {
    let nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
