//! The consumer process: handles numbered messages by recording them, then lets the runtime
//! acknowledge; optionally panics on the first delivery of every n-th message.

use std::path::PathBuf;
use std::sync::Arc;

use busway::{Bus, HandlerError, Incoming, handler_fn};
use tokio::sync::Mutex;

use crate::RunError;
use crate::ledger::Ledger;
use crate::produce::number_of;

/// How the consumer runs.
#[derive(Clone, Debug)]
pub struct ConsumeOptions {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// Where handled numbers are recorded.
    pub ledger: PathBuf,
    /// Panic on the first delivery of every message whose number is a multiple of this.
    pub panic_every: Option<u64>,
    /// Deliveries handled at once.
    pub concurrency: usize,
}

/// Consumes until SIGTERM or SIGINT (then shuts down gracefully) or until killed.
pub async fn consume(bus: &Bus, options: &ConsumeOptions) -> Result<(), RunError> {
    let term = wait_for_termination()?;
    // The orchestrator waits for this line before it publishes.
    let ready = || {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    };
    consume_until(bus, options, ready, term).await
}

/// Consumes until `stop` completes, then shuts down gracefully; `ready` is called once
/// subscribed.
pub async fn consume_until(
    bus: &Bus,
    options: &ConsumeOptions,
    ready: impl FnOnce(),
    stop: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let ledger = Arc::new(Mutex::new(Ledger::open(&options.ledger).await?));
    let panic_every = options.panic_every;
    let handler = handler_fn(move |incoming: Incoming| {
        let ledger = ledger.clone();
        async move {
            let n = number_of(&incoming.message)
                .ok_or_else(|| HandlerError::permanent("not a numbered message"))?;
            if let Some(every) = panic_every
                && n % every.max(1) == 0
                && incoming.info.attempt == 1
            {
                panic!("reliability run: planned panic on message {n}");
            }
            // The effect, recorded before the runtime acknowledges: a crash in between makes a
            // duplicate, never a loss.
            ledger
                .lock()
                .await
                .append(&[n])
                .await
                .map_err(HandlerError::transient)?;
            Ok(())
        }
    });
    let consumer = bus
        .consumer(&options.topic, &options.group)
        .concurrency(options.concurrency)
        .start(handler)
        .await?;
    tracing::info!(topic = %options.topic, group = %options.group, "consuming");
    ready();
    stop.await;
    let report = consumer.shutdown().await?;
    tracing::info!(?report, "consumer stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT; listening starts at once, so a signal sent while the
/// consumer starts is not missed.
fn wait_for_termination() -> Result<impl Future<Output = ()>, RunError> {
    use tokio::signal::unix::{SignalKind, signal};
    let error = |source| RunError::Process {
        what: "listening for SIGTERM".into(),
        source,
    };
    let mut term = signal(SignalKind::terminate()).map_err(error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(error)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
