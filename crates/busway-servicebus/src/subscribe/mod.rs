//! Subscriptions: a plain receiver per member, or, for groups that need per-key order, session
//! receivers that take turns on the sessions with messages.

mod link;
mod pump;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azservicebus::{
    ServiceBusReceiveMode, ServiceBusReceiver, ServiceBusReceiverOptions,
    ServiceBusSessionReceiverOptions,
};
use busway_core::{Delivery, Result, Subscription};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub(crate) use pump::Context;
use pump::{Ended, Pump};

use crate::connection::{Connection, Connector};
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

/// Opens a plain (non-session) subscription: the first link at once (so a missing entity is
/// reported by `subscribe`), and a task that keeps one open, reopening it (and, if need be,
/// the connection) when it fails.
pub(crate) async fn plain(
    connection: Arc<Connection>,
    ctx: Arc<Context>,
    prefetch: usize,
) -> Result<Box<dyn Subscription>> {
    let receiver = open_plain(&connection, &ctx).await?;
    let (out, deliveries) = mpsc::channel(prefetch.max(1));
    tokio::spawn(keep_plain(connection, ctx, out, prefetch, receiver));
    Ok(Box::new(Deliveries { deliveries }))
}

async fn open_plain(connection: &Connection, ctx: &Context) -> Result<ServiceBusReceiver> {
    connection
        .open("opening a receiver", &ctx.receive_entity, |client| {
            let entity = ctx.receive_entity.clone();
            Box::pin(async move {
                client
                    .create_receiver_for_queue(entity, receiver_options())
                    .await
            })
        })
        .await
}

/// Runs pumps on `first`, then on fresh links, until the subscription closes.
async fn keep_plain(
    connection: Arc<Connection>,
    ctx: Arc<Context>,
    out: mpsc::Sender<Result<Delivery>>,
    prefetch: usize,
    first: ServiceBusReceiver,
) {
    let mut next = Some(first);
    let mut failures = 0u32;
    loop {
        let receiver = match next.take() {
            Some(r) => r,
            None => match open_plain(&connection, &ctx).await {
                Ok(r) => r,
                Err(e) => {
                    failures += 1;
                    let fatal = !e.is_transient();
                    tracing::warn!(error = %e, entity = %ctx.receive_entity, "reopening a receive link failed");
                    // A transient error tells the runtime the subscription is recovering; any
                    // other ends it (the runtime subscribes again or stops with the error).
                    tokio::select! {
                        _ = out.send(Err(e)) => {}
                        () = out.closed() => return,
                    }
                    if fatal {
                        return;
                    }
                    pause(failures, &out).await;
                    continue;
                }
            },
        };
        // The pump hands out at most `prefetch` unsettled deliveries: the hand-off channel holds
        // that many, and those a consumer took still hold their locks until settled.
        let pump = Pump::new(
            receiver,
            ctx.clone(),
            out.clone(),
            prefetch,
            RECEIVE_WAIT,
            false,
        );
        match pump.run().await {
            Ended::Closed => return,
            Ended::Idle => failures = 0,
            Ended::Failed => {
                failures += 1;
                pause(failures, &out).await;
            }
        }
        if out.is_closed() {
            return;
        }
    }
}

/// Backoff between reopening attempts, cut short when the subscription closes.
async fn pause(failures: u32, out: &mpsc::Sender<Result<Delivery>>) {
    let wait = Duration::from_millis(100 * u64::from(failures.min(30)));
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = out.closed() => {}
    }
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
    let connection = Arc::new(Connection::connect(connector.clone()).await?);
    let (out, deliveries) = mpsc::channel(prefetch.max(1));
    tokio::spawn(async move {
        let mut workers = JoinSet::new();
        for _ in 0..sessions.max(1) {
            let worker = SessionWorker {
                connection: connection.clone(),
                ctx: ctx.clone(),
                out: out.clone(),
                idle,
                queue,
            };
            workers.spawn(worker.run());
        }
        drop(out);
        while workers.join_next().await.is_some() {}
        connection.close().await;
    });
    Ok(Box::new(Deliveries { deliveries }))
}

struct SessionWorker {
    connection: Arc<Connection>,
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
            // The service ends an accept with a timeout when no session has messages; on a lost
            // connection nothing ever answers, so the wait is bounded here too.
            let patience = self.connection.operation_timeout() * 2;
            let accept = async {
                let mut state = self.connection.lock().await;
                let generation = state.generation();
                let client = match state.client() {
                    Ok(client) => client,
                    Err(e) => return (generation, Err(e)),
                };
                let accepted = if self.queue {
                    client
                        .accept_next_session_for_queue(
                            self.ctx.send_entity.clone(),
                            options.clone(),
                        )
                        .await
                } else {
                    client
                        .accept_next_session_for_subscription(
                            &self.ctx.send_entity,
                            &self.ctx.group,
                            options.clone(),
                        )
                        .await
                };
                (
                    generation,
                    accepted
                        .map_err(|e| classify("accepting a session", &self.ctx.receive_entity, e)),
                )
            };
            let accept = async {
                match tokio::time::timeout(patience, accept).await {
                    Ok(result) => result,
                    Err(_) => {
                        let generation = self.connection.lock().await.generation();
                        let lost = busway_core::Error::Connection {
                            message: format!(
                                "accepting a session on `{}` got no answer in {patience:?}",
                                self.ctx.receive_entity
                            ),
                            source: None,
                        };
                        (generation, Err(lost))
                    }
                }
            };
            // A pending accept is not cancelled when the subscription closes: dropping a
            // half-attached link can end the client's whole AMQP session. It ends on its own
            // (the service answers within its timeout) and the session is released at once; only
            // an accept the connection never answers (it was lost) is given up.
            let (generation, accepted) = accept.await;
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
                // No session with messages: the normal idle state.
                Err(err) if err.kind() == busway_core::ErrorKind::Timeout => {}
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a session failed");
                    if err.is_transient()
                        && let Err(e) = self.connection.replace_after_failure(generation).await
                    {
                        tracing::warn!(error = %e, "reconnecting for sessions failed");
                    }
                    let fatal = !err.is_transient();
                    tokio::select! {
                        _ = self.out.send(Err(err)) => {}
                        () = self.out.closed() => return,
                    }
                    if fatal {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
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
