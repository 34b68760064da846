//! The settlement handle of a Service Bus delivery: it asks the pump that owns the link.

use async_trait::async_trait;
use busway_core::{Error, Result, Settle, Settlement};
use tokio::sync::{mpsc, oneshot};

use super::pump::{Action, Command};

pub(crate) struct SbSettle {
    id: u64,
    pump: mpsc::UnboundedSender<Command>,
    settled: bool,
}

impl SbSettle {
    pub(crate) fn new(id: u64, pump: mpsc::UnboundedSender<Command>) -> Self {
        Self {
            id,
            pump,
            settled: false,
        }
    }
}

#[async_trait]
impl Settle for SbSettle {
    async fn settle(&mut self, settlement: &Settlement) -> Result<()> {
        let action = match settlement {
            Settlement::Ack => Action::Ack,
            Settlement::Redeliver {
                delay,
                first_failure,
            } => Action::Redeliver {
                delay: *delay,
                first_failure: *first_failure,
            },
            Settlement::DeadLetter(meta) => Action::DeadLetter(meta.clone()),
        };
        let (reply, answer) = oneshot::channel();
        let command = Command {
            id: self.id,
            action,
            reply: Some(reply),
        };
        if self.pump.send(command).is_err() {
            return Err(Error::Closed(
                "the receiver of this delivery is gone; the broker will redeliver it".into(),
            ));
        }
        let outcome = answer.await.unwrap_or_else(|_| {
            Err(Error::Closed(
                "the receiver of this delivery stopped before settling it".into(),
            ))
        });
        self.settled = outcome.is_ok();
        outcome
    }
}

impl Drop for SbSettle {
    /// An unsettled delivery goes back to the broker at once (abandon), as if its consumer died,
    /// instead of waiting for its lock to expire.
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.pump.send(Command {
                id: self.id,
                action: Action::Release,
                reply: None,
            });
        }
    }
}
