//! Subscriptions: a plain receiver per member, or, for groups that need per-key order, session
//! receivers that take turns on the sessions with messages.

mod link;
mod pump;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azservicebus::{
    ServiceBusReceiveMode, ServiceBusReceiverOptions, ServiceBusSessionReceiverOptions,
};
use busway_core::{Delivery, Result, Subscription};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

pub(crate) use pump::Context;
use pump::{Ended, Pump};

use crate::client::{Connector, SharedClient};
use crate::error::classify;

/// How long one receive on a plain link waits before it is re-issued.
const RECEIVE_WAIT: Duration = Duration::from_secs(10);

/// Receive options: peek-lock, and no client-side prefetch: the pump asks for one message
/// whenever the runtime has room for one, so nothing sits locked in a client buffer.
fn receiver_options() -> ServiceBusReceiverOptions {
    ServiceBusReceiverOptions {
        prefetch_count: 0,
        receive_mode: ServiceBusReceiveMode::PeekLock,
        ..ServiceBusReceiverOptions::default()
    }
}

/// Opens a plain (non-session) subscription.
pub(crate) async fn plain(
    client: &SharedClient,
    ctx: Arc<Context>,
    prefetch: usize,
) -> Result<Box<dyn Subscription>> {
    let receiver = client
        .lock()
        .await
        .create_receiver_for_queue(ctx.receive_entity.clone(), receiver_options())
        .await
        .map_err(|e| classify("opening a receiver", &ctx.receive_entity, e))?;
    let (out, deliveries) = mpsc::channel(prefetch.max(1));
    let pump = Pump::new(receiver, ctx, out, usize::MAX, RECEIVE_WAIT, false);
    tokio::spawn(pump.run());
    Ok(Box::new(Deliveries { deliveries }))
}

/// Opens a per-key-ordered subscription on a session-enabled entity: up to `sessions` sessions
/// at once, each handled strictly one message at a time, on a connection of its own (accepting
/// the next session blocks a connection until one is available).
pub(crate) async fn sessions(
    connector: &Connector,
    ctx: Arc<Context>,
    prefetch: usize,
    sessions: usize,
    idle: Duration,
    queue: bool,
) -> Result<Box<dyn Subscription>> {
    let client: SharedClient = Arc::new(Mutex::new(connector.connect().await?));
    let (out, deliveries) = mpsc::channel(prefetch.max(1));
    tokio::spawn(async move {
        let mut workers = JoinSet::new();
        for _ in 0..sessions.max(1) {
            let worker = SessionWorker {
                client: client.clone(),
                ctx: ctx.clone(),
                out: out.clone(),
                idle,
                queue,
            };
            workers.spawn(worker.run());
        }
        drop(out);
        while workers.join_next().await.is_some() {}
        match Arc::try_unwrap(client) {
            Ok(client) => {
                if let Err(e) = client.into_inner().dispose().await {
                    tracing::debug!(error = %e, "disposing the session connection");
                }
            }
            Err(_) => tracing::debug!("session connection still shared at shutdown"),
        }
    });
    Ok(Box::new(Deliveries { deliveries }))
}

struct SessionWorker {
    client: SharedClient,
    ctx: Arc<Context>,
    out: mpsc::Sender<Result<Delivery>>,
    idle: Duration,
    queue: bool,
}

impl SessionWorker {
    async fn run(self) {
        let options = ServiceBusSessionReceiverOptions {
            prefetch_count: 0,
            receive_mode: ServiceBusReceiveMode::PeekLock,
            ..ServiceBusSessionReceiverOptions::default()
        };
        loop {
            if self.out.is_closed() {
                return;
            }
            let accept = async {
                let mut client = self.client.lock().await;
                if self.queue {
                    client
                        .accept_next_session_for_queue(self.ctx.topic.clone(), options.clone())
                        .await
                } else {
                    client
                        .accept_next_session_for_subscription(
                            &self.ctx.topic,
                            &self.ctx.group,
                            options.clone(),
                        )
                        .await
                }
            };
            // A pending accept is not cancelled when the subscription closes: dropping a
            // half-attached link can end the client's whole AMQP session. It ends on its own
            // (the service answers within its timeout) and the session is released at once.
            let accepted = accept.await;
            match accepted {
                Ok(receiver) if self.out.is_closed() => {
                    if let Err(e) = receiver.dispose().await {
                        tracing::debug!(error = %e, "releasing a session accepted while closing");
                    }
                    return;
                }
                Ok(receiver) => {
                    let pump = Pump::new(
                        receiver,
                        self.ctx.clone(),
                        self.out.clone(),
                        1,
                        self.idle,
                        true,
                    );
                    if let Ended::Closed = pump.run().await {
                        return;
                    }
                }
                Err(e) => {
                    let err = classify("accepting a session", &self.ctx.receive_entity, e);
                    // No session with messages: the normal idle state.
                    if err.kind() != busway_core::ErrorKind::Timeout {
                        tracing::warn!(error = %err, "accepting a session failed");
                        let _ = self.out.send(Err(err)).await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}

/// The consumer side: deliveries handed out by the pump(s).
struct Deliveries {
    deliveries: mpsc::Receiver<Result<Delivery>>,
}

#[async_trait]
impl Subscription for Deliveries {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        self.deliveries.recv().await
    }

    async fn close(&mut self) -> Result<()> {
        // Closing the channel stops the pumps receiving; deliveries still buffered are dropped
        // here, which abandons them so they go back to the broker at once.
        self.deliveries.close();
        while let Ok(d) = self.deliveries.try_recv() {
            drop(d);
        }
        Ok(())
    }
}
