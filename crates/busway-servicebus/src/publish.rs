//! Sender links, pooled per entity, and the retries of a failed send.
//!
//! The client's senders need `&mut` for every send and a send waits for the broker's verdict, so
//! one sender per topic would serialise every publisher of the process; a small pool per entity
//! lets that many sends be in flight at once. A send that fails for a reason that may pass (a
//! lost connection, a timeout, a busy broker) is retried on a fresh link, with backoff, up to
//! `max_retries` times: the client itself does not retry (see [`crate::connection`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use azservicebus::{
    CreateMessageBatchOptions, ServiceBusMessage, ServiceBusSender, ServiceBusSenderOptions,
};
use busway_core::{Error, Result};
use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::connection::{CLOSE_TIMEOUT, Connection};
use crate::error::classify;

type Slot = Arc<Mutex<Option<ServiceBusSender>>>;

/// The first pause before a retry; doubled each time up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);

struct Pool {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

/// Every sender link of a broker.
pub(crate) struct Senders {
    connection: Arc<Connection>,
    pools: SyncMutex<HashMap<String, Arc<Pool>>>,
    per_entity: usize,
    max_retries: u32,
}

type SendFuture<'s, T> =
    Pin<Box<dyn Future<Output = std::result::Result<T, azure_core::Error>> + Send + 's>>;

impl Senders {
    pub(crate) fn new(connection: Arc<Connection>, per_entity: usize, max_retries: u32) -> Self {
        Self {
            connection,
            pools: SyncMutex::new(HashMap::new()),
            per_entity: per_entity.max(1),
            max_retries,
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
                .connection
                .open("opening a sender", entity, |client| {
                    let entity = entity.to_owned();
                    Box::pin(async move {
                        client
                            .create_sender(entity, ServiceBusSenderOptions::default())
                            .await
                    })
                })
                .await?;
            *guard = Some(sender);
        }
        Ok(guard)
    }

    /// Forgets a sender after a failure, so the next use opens a fresh link.
    async fn discard(guard: &mut OwnedMutexGuard<Option<ServiceBusSender>>) {
        if let Some(sender) = guard.take()
            && let Ok(Err(e)) = tokio::time::timeout(CLOSE_TIMEOUT, sender.dispose()).await
        {
            tracing::debug!(error = %e, "disposing a failed sender");
        }
    }

    /// Runs `op` on a sender of `entity`, retrying failures that may pass on a fresh link.
    async fn with_retries<T>(
        &self,
        what: &str,
        entity: &str,
        mut op: impl for<'s> FnMut(&'s mut ServiceBusSender) -> SendFuture<'s, T>,
    ) -> Result<T> {
        let mut pause = FIRST_PAUSE;
        let mut retries = 0;
        loop {
            let result = match self.acquire(entity).await {
                Ok(mut guard) => {
                    let outcome = match guard.as_mut() {
                        Some(sender) => op(sender).await.map_err(|e| classify(what, entity, e)),
                        None => Err(Error::Closed("sender".into())),
                    };
                    if outcome.is_err() {
                        Self::discard(&mut guard).await;
                    }
                    outcome
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(e) if e.is_transient() && retries < self.max_retries => {
                    retries += 1;
                    tracing::debug!(error = %e, retries, "retrying on a fresh link");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one message.
    pub(crate) async fn send(&self, entity: &str, message: ServiceBusMessage) -> Result<()> {
        self.with_retries("publishing", entity, |sender| {
            let message = message.clone();
            Box::pin(async move { sender.send_message(message).await })
        })
        .await
    }

    /// Sends messages in as few batches as the batch size limit allows; each batch is retried
    /// on its own, so a retry never repeats a batch that was sent.
    pub(crate) async fn send_batched(
        &self,
        entity: &str,
        messages: Vec<ServiceBusMessage>,
        limit: usize,
    ) -> Result<()> {
        let groups = {
            let guard = self.acquire(entity).await?;
            let Some(sender) = guard.as_ref() else {
                return Err(Error::Closed("sender".into()));
            };
            partition(sender, entity, messages, limit)?
        };
        for group in groups {
            self.with_retries("publishing a batch", entity, |sender| {
                let group = group.clone();
                Box::pin(async move { sender.send_messages(group).await })
            })
            .await?;
        }
        Ok(())
    }

    /// Schedules one message for `at`; returns its sequence number.
    pub(crate) async fn schedule(
        &self,
        entity: &str,
        message: ServiceBusMessage,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        let at = to_offset(at);
        let numbers = self
            .with_retries("scheduling", entity, |sender| {
                let message = message.clone();
                Box::pin(
                    async move { sender.schedule_messages(std::iter::once(message), at).await },
                )
            })
            .await?;
        numbers.first().copied().ok_or_else(|| {
            Error::Rejected(format!(
                "scheduling on `{entity}` returned no sequence number"
            ))
        })
    }

    /// Cancels a scheduled message.
    pub(crate) async fn cancel_scheduled(&self, entity: &str, sequence_number: i64) -> Result<()> {
        self.with_retries("cancelling a scheduled message", entity, |sender| {
            Box::pin(async move { sender.cancel_scheduled_message(sequence_number).await })
        })
        .await
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

/// Splits `messages` into groups that each fit one AMQP batch of the link and `limit`.
fn partition(
    sender: &ServiceBusSender,
    entity: &str,
    messages: Vec<ServiceBusMessage>,
    limit: usize,
) -> Result<Vec<Vec<ServiceBusMessage>>> {
    let new_batch = || {
        sender
            .create_message_batch(CreateMessageBatchOptions::default())
            .map_err(|e| Error::Rejected(format!("cannot create a batch for `{entity}`: {e:?}")))
    };
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut batch = new_batch()?;
    for message in messages {
        // The link's limit may be larger than the configured one; batches stay within both.
        let size = crate::codec::encoded_size(&message);
        let fits = batch.size_in_bytes() as usize + size + 16 <= limit
            && batch.try_add_message(message.clone()).is_ok();
        if fits {
            group.push(message);
            continue;
        }
        if group.is_empty() {
            return Err(Error::TooLarge { size, limit });
        }
        groups.push(std::mem::take(&mut group));
        batch = new_batch()?;
        if batch.try_add_message(message.clone()).is_err() || size + 16 > limit {
            return Err(Error::TooLarge { size, limit });
        }
        group.push(message);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    Ok(groups)
}

/// chrono to the `time` crate the client uses.
fn to_offset(at: DateTime<Utc>) -> time::OffsetDateTime {
    let nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
