//! One supervised AMQP connection: established once, watched, and re-established with backoff
//! (`backon`) after it is lost, whether the network dropped, the broker restarted or an operator
//! closed it.
//!
//! Users of the connection never hold it across an outage: they ask for the current
//! [`Link`] when they need one, and its `generation` tells them whether what they declared or
//! opened (channels, consumers, the declared-topology cache) belongs to an older connection and
//! must be redone.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use busway_core::{Error, Result};
use futures::StreamExt;
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties, Event};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ReconnectConfig;
use crate::error;

/// How often the supervisor double-checks the connection state, in case a loss produced no
/// event (events are only a fast path).
const POLL: Duration = Duration::from_millis(250);

/// The live connection of one generation.
pub(crate) struct Link {
    pub(crate) conn: Connection,
    /// Increases by one with every reconnection.
    pub(crate) generation: u64,
}

impl Link {
    /// Opens a channel on this connection.
    pub(crate) async fn channel(&self, what: &str) -> Result<lapin::Channel> {
        self.conn
            .create_channel()
            .await
            .map_err(|e| error::classify(e, &format!("opening a channel for {what}")))
    }
}

#[derive(Clone)]
enum State {
    Up(Arc<Link>),
    Down { last_error: Arc<str> },
    Closed,
}

/// What is needed to (re)connect.
pub(crate) struct Settings {
    pub(crate) uri: AMQPUri,
    pub(crate) tls: OwnedTLSConfig,
    /// Shown by the broker; distinguishes busway's publishing and consuming connections.
    pub(crate) name: String,
    pub(crate) reconnect: ReconnectConfig,
    /// Redacted URL, for messages.
    pub(crate) display: String,
}

/// A connection kept alive by a background supervisor task.
pub(crate) struct Supervised {
    state: watch::Receiver<State>,
    /// Dropped with the last handle: tells the supervisor to close the connection and stop.
    _stop: watch::Sender<()>,
}

impl Supervised {
    /// Connects (once: a broker that cannot be reached at start-up is a configuration problem
    /// worth reporting) and starts supervising the connection.
    pub(crate) async fn connect(settings: Settings) -> Result<Self> {
        let settings = Arc::new(settings);
        let conn = open(&settings).await?;
        let (state_tx, state) = watch::channel(State::Up(Arc::new(Link {
            conn,
            generation: 1,
        })));
        let (stop, stopped) = watch::channel(());
        tokio::spawn(supervise(settings, state_tx, stopped));
        Ok(Self { state, _stop: stop })
    }

    /// The live connection, waiting for a reconnection until `deadline`.
    pub(crate) async fn link(&self, deadline: Instant) -> Result<Arc<Link>> {
        let mut state = self.state.clone();
        loop {
            let last_error = match &*state.borrow_and_update() {
                State::Up(link) if link.conn.status().connected() => return Ok(link.clone()),
                // Lost but not yet noticed by the supervisor: wait for it to move on.
                State::Up(_) => Arc::from("the connection was lost"),
                State::Down { last_error } => last_error.clone(),
                State::Closed => {
                    return Err(Error::Closed(
                        "the RabbitMQ broker handle was dropped".into(),
                    ));
                }
            };
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(Error::Closed(
                        "the RabbitMQ connection supervisor stopped".into(),
                    ));
                }
                Err(_) => {
                    return Err(Error::Connection {
                        message: format!(
                            "RabbitMQ is unreachable and did not come back in time: {last_error}"
                        ),
                        source: None,
                    });
                }
            }
        }
    }

    /// The largest frame the current connection takes (negotiated with the broker), if it is up.
    pub(crate) fn frame_max(&self) -> Option<u32> {
        match &*self.state.borrow() {
            State::Up(link) => Some(link.conn.configuration().frame_max()),
            _ => None,
        }
    }

    /// The generation of the current connection, if it is up.
    pub(crate) fn current_generation(&self) -> Option<u64> {
        match &*self.state.borrow() {
            State::Up(link) => Some(link.generation),
            _ => None,
        }
    }
}

async fn open(settings: &Settings) -> Result<Connection> {
    let runtime = lapin::runtime::default_runtime()
        .map_err(|e| error::classify(e, "starting lapin on the tokio runtime"))?;
    let properties = ConnectionProperties::default()
        .with_connection_name(settings.name.clone().into())
        .with_client_property("product".into(), "busway".into());
    Connection::connect_uri_with_config(
        settings.uri.clone(),
        properties,
        settings.tls.clone(),
        runtime,
    )
    .await
    .map_err(|e| error::classify(e, &format!("connecting to {}", settings.display)))
}

async fn supervise(
    settings: Arc<Settings>,
    state: watch::Sender<State>,
    mut stopped: watch::Receiver<()>,
) {
    let mut generation = 1;
    loop {
        let link = match &*state.borrow() {
            State::Up(link) => link.clone(),
            _ => return,
        };
        let lost = tokio::select! {
            lost = watch_until_lost(&link) => lost,
            _ = stopped.changed() => {
                // Every handle is gone: close politely so the broker requeues at once.
                let _ = link.conn.close(200, "busway broker dropped".into()).await;
                let _ = state.send(State::Closed);
                return;
            }
        };
        tracing::warn!(connection = %settings.name, reason = %lost, "RabbitMQ connection lost; reconnecting");
        let _ = state.send(State::Down {
            last_error: Arc::from(lost.as_str()),
        });
        drop(link);

        let backoff = ExponentialBuilder::default()
            .with_min_delay(settings.reconnect.initial_delay)
            .with_max_delay(settings.reconnect.max_delay)
            .with_jitter()
            .without_max_times();
        let attempt = (|| open(&settings))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .notify(|e: &Error, wait: Duration| {
                tracing::info!(connection = %settings.name, error = %e, ?wait, "RabbitMQ still unreachable");
                let _ = state.send(State::Down {
                    last_error: Arc::from(e.to_string().as_str()),
                });
            });
        let conn = tokio::select! {
            conn = attempt => conn,
            _ = stopped.changed() => {
                let _ = state.send(State::Closed);
                return;
            }
        };
        match conn {
            Ok(conn) => {
                generation += 1;
                tracing::info!(connection = %settings.name, generation, "RabbitMQ connection re-established");
                let _ = state.send(State::Up(Arc::new(Link { conn, generation })));
            }
            // Only reachable if the backoff were bounded; keep the error visible and stop.
            Err(e) => {
                tracing::error!(connection = %settings.name, error = %e, "giving up reconnecting to RabbitMQ");
                let _ = state.send(State::Down {
                    last_error: Arc::from(e.to_string().as_str()),
                });
                return;
            }
        }
    }
}

/// Returns why the connection of `link` was lost, once it is.
async fn watch_until_lost(link: &Link) -> String {
    let mut events = link.conn.events_listener();
    let mut poll = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(e)) => return e.to_string(),
                Some(_) => {}
                // The connection's event source is gone: so is the connection.
                None => return "connection closed".to_owned(),
            },
            _ = poll.tick() => {
                let status = link.conn.status();
                if !(status.connected() || status.connecting()) {
                    return format!("connection no longer open: {status:?}");
                }
            }
        }
    }
}

/// A channel reused across operations, reopened when it belongs to an older connection or the
/// broker closed it (a failed declaration closes its channel).
pub(crate) struct ChannelSlot {
    what: &'static str,
    confirms: bool,
    slot: std::sync::Mutex<Option<(u64, lapin::Channel)>>,
    /// Serialises reopening so that concurrent callers share one new channel.
    opening: tokio::sync::Mutex<()>,
}

impl ChannelSlot {
    /// A slot for channels used for `what`, in confirm mode when `confirms`.
    pub(crate) fn new(what: &'static str, confirms: bool) -> Self {
        Self {
            what,
            confirms,
            slot: std::sync::Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, generation: u64) -> Option<lapin::Channel> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|(g, ch)| *g == generation && ch.status().connected())
            .map(|(_, ch)| ch.clone())
    }

    /// The open channel of `link`'s connection.
    pub(crate) async fn get(&self, link: &Link) -> Result<lapin::Channel> {
        if let Some(ch) = self.cached(link.generation) {
            return Ok(ch);
        }
        let _opening = self.opening.lock().await;
        if let Some(ch) = self.cached(link.generation) {
            return Ok(ch);
        }
        let ch = link.channel(self.what).await?;
        if self.confirms {
            ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await
                .map_err(|e| error::classify(e, "enabling publisher confirms"))?;
        }
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((link.generation, ch.clone()));
        Ok(ch)
    }
}
