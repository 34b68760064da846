//! Starting and stopping the emulator.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use fe2o3_amqp::acceptor::{ConnectionAcceptor, SaslAnonymousMechanism};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle, task::JoinSet};

use crate::{
    cbs::SasKeys,
    config::{NamespaceConfig, QueueConfig, TopicConfig},
    connection::{self, Shared},
    entity::{Broker, Limits},
    error::{ConfigError, EmulatorError},
};

/// Key name the official emulator's connection string uses.
pub const DEFAULT_SAS_KEY_NAME: &str = "RootManageSharedAccessKey";
/// Key value the official emulator's connection string uses.
pub const DEFAULT_SAS_KEY: &str = "SAS_KEY_VALUE";
/// Environment variable the binary reads its SAS key from.
pub const KEY_ENV: &str = "BUSWAY_SB_EMULATOR_KEY";
/// Shown in place of a SAS key wherever the emulator prints a connection string.
pub const REDACTED: &str = "<redacted>";
/// How often timers (locks, TTL, schedules, session locks) are evaluated.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(10);

/// Entry point: `Emulator::builder()` or `Emulator::from_config_file(path)`.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// A builder with no entities, the default SAS key and an ephemeral port on 127.0.0.1.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// A builder holding the entities of an official-emulator `Config.json`.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<EmulatorBuilder, ConfigError> {
        Ok(EmulatorBuilder {
            namespace: NamespaceConfig::from_file(path)?,
            ..EmulatorBuilder::default()
        })
    }
}

/// Configures and starts an emulator.
#[derive(Clone)]
pub struct EmulatorBuilder {
    namespace: NamespaceConfig,
    keys: Vec<(String, String)>,
    bind: String,
    limits: Limits,
    session_wait: Duration,
}

impl std::fmt::Debug for EmulatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAS keys are secrets: only their names are shown.
        let key_names: Vec<&str> = self.keys.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("EmulatorBuilder")
            .field("namespace", &self.namespace)
            .field("sas_key_names", &key_names)
            .field("bind", &self.bind)
            .field("limits", &self.limits)
            .field("session_wait", &self.session_wait)
            .finish()
    }
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            namespace: NamespaceConfig {
                name: "sbemulatorns".into(),
                ..NamespaceConfig::default()
            },
            keys: Vec::new(),
            bind: "127.0.0.1:0".into(),
            limits: Limits::default(),
            session_wait: Duration::from_secs(10),
        }
    }
}

impl EmulatorBuilder {
    /// Adds a queue.
    pub fn queue(mut self, queue: QueueConfig) -> Self {
        self.namespace.queues.push(queue);
        self
    }

    /// Adds a topic with its subscriptions.
    pub fn topic(mut self, topic: TopicConfig) -> Self {
        self.namespace.topics.push(topic);
        self
    }

    /// Adds every entity of a namespace configuration.
    pub fn namespace(mut self, namespace: NamespaceConfig) -> Self {
        self.namespace.queues.extend(namespace.queues);
        self.namespace.topics.extend(namespace.topics);
        self
    }

    /// Accepts SAS tokens signed with this key. Without any, the official emulator's
    /// `RootManageSharedAccessKey` / `SAS_KEY_VALUE` is used.
    pub fn sas_key(mut self, name: impl Into<String>, key: impl Into<String>) -> Self {
        self.keys.push((name.into(), key.into()));
        self
    }

    /// Address to listen on (`127.0.0.1:0` by default: an ephemeral port).
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.bind = addr.into();
        self
    }

    /// Storage limits (message size, bytes and messages per entity).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long "accept next session" waits for a session with messages before failing with a
    /// timeout (Service Bus waits for the client's operation timeout).
    pub fn next_session_timeout(mut self, wait: Duration) -> Self {
        self.session_wait = wait;
        self
    }

    /// Binds the listener and starts serving.
    pub async fn start(self) -> Result<EmulatorHandle, EmulatorError> {
        let broker = Arc::new(Broker::new(&self.namespace, self.limits)?);
        let mut keys = SasKeys::default();
        let configured = if self.keys.is_empty() {
            vec![(
                DEFAULT_SAS_KEY_NAME.to_string(),
                DEFAULT_SAS_KEY.to_string(),
            )]
        } else {
            self.keys
        };
        for (name, key) in &configured {
            keys.insert(name.clone(), key.clone());
        }
        let (key_name, key) = keys
            .first()
            .map(|(n, k)| (n.to_string(), k.to_string()))
            .unwrap_or_default();
        let listener =
            TcpListener::bind(&self.bind)
                .await
                .map_err(|source| EmulatorError::Bind {
                    addr: self.bind.clone(),
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: self.bind.clone(),
                source,
            })?;
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            keys,
            session_wait: self.session_wait,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
        tracing::info!(%addr, namespace = %self.namespace.name, "Service Bus emulator listening");
        Ok(EmulatorHandle {
            addr,
            key_name,
            key,
            shutdown: shutdown_tx,
            task: Some(task),
            broker,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = Arc::new(
        ConnectionAcceptor::builder()
            .container_id("busway-sb-emulator")
            .max_frame_size(crate::wire::MAX_FRAME_SIZE)
            .sasl_acceptor(SaslAnonymousMechanism::new())
            .build(),
    );
    let mut connections = JoinSet::new();
    let mut timers = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    timers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection::serve(
                        stream,
                        acceptor.clone(),
                        shared.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(error) => tracing::warn!(%error, "accept failed"),
            },
            _ = timers.tick() => shared.broker.housekeeping(),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections did not close in time; aborting them");
        connections.abort_all();
    }
}

/// A running emulator. Dropping it stops the emulator (without waiting); prefer
/// [`EmulatorHandle::shutdown`].
pub struct EmulatorHandle {
    addr: SocketAddr,
    key_name: String,
    key: String,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    broker: Arc<Broker>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.addr)
            .field("sas_key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for EmulatorHandle {
    /// The connection string with the key redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.connection_string_with(REDACTED))
    }
}

/// The SAS key the binary accepts: the first line of `key_file`, else the value of
/// [`KEY_ENV`] (`env`), else `None` (the official emulator's public development key, which is
/// allowed only on a loopback address: see [`check_key_for_host`]).
pub fn load_key(
    key_file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<String>, crate::error::KeyError> {
    use crate::error::KeyError;
    if let Some(path) = key_file {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let key = text.lines().next().unwrap_or_default().trim();
        if key.is_empty() {
            return Err(KeyError::Empty(path.display().to_string()));
        }
        return Ok(Some(key.to_string()));
    }
    match env {
        Some(value) if value.trim().is_empty() => Err(KeyError::Empty(KEY_ENV.to_string())),
        Some(value) => Ok(Some(value.trim().to_string())),
        None => Ok(None),
    }
}

/// Refuses the public development key on an address other machines can reach.
pub fn check_key_for_host(host: &str, key: Option<&str>) -> Result<(), crate::error::KeyError> {
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if key.is_none() && !loopback {
        return Err(crate::error::KeyError::PublicKeyOnNetwork(host.to_string()));
    }
    Ok(())
}

impl EmulatorHandle {
    /// The address the emulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` to hand to azservicebus' `new_from_named_key_credential` (its connection-string
    /// parser drops the port).
    pub fn namespace_endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Name of the SAS key tokens must be signed with.
    pub fn sas_key_name(&self) -> &str {
        &self.key_name
    }

    /// The SAS key tokens must be signed with.
    pub fn sas_key(&self) -> &str {
        &self.key
    }

    /// `Endpoint=sb://127.0.0.1:PORT;SharedAccessKeyName=..;SharedAccessKey=..;UseDevelopmentEmulator=true`
    ///
    /// It holds the key: hand it to clients, do not log it ([`EmulatorHandle`]'s `Display` shows
    /// it with the key redacted).
    pub fn connection_string(&self) -> String {
        self.connection_string_with(&self.key)
    }

    fn connection_string_with(&self, key: &str) -> String {
        format!(
            "Endpoint=sb://{};SharedAccessKeyName={};SharedAccessKey={key};UseDevelopmentEmulator=true",
            self.addr, self.key_name
        )
    }

    /// Fault injection for tests of failure handling: while `refuse` is on, dead-lettering a
    /// message of the queue or subscription at `path` (e.g. `orders/Subscriptions/billing`),
    /// by link disposition or `update-disposition`, fails with `com.microsoft:server-busy`, and
    /// the message keeps its lock, as after any failed disposition.
    pub fn refuse_dead_letters(&self, path: &str, refuse: bool) {
        self.broker.refuse_dead_letters(path, refuse);
    }

    /// Active and dead-letter message counts of a queue or subscription path.
    pub fn message_counts(&self, entity: &str) -> Option<(usize, usize)> {
        self.broker.counts(entity)
    }

    /// Stops accepting connections, closes open ones and waits for them (at most a few seconds).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "emulator task failed");
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
