//! Opening clients (AMQP connections) to a namespace or an emulator, and replacing one that was
//! lost.
//!
//! busway recovers from a lost connection itself rather than letting azservicebus do it: the
//! client's own recovery re-attaches links silently, after which a settlement of a message
//! received before the loss is sent on a link that no longer knows it and "succeeds" without
//! reaching the broker; and its retry of a failed send polls a finished future and panics
//! (azservicebus 0.25.1, `AmqpSender::send_batch_envelope`). Clients are therefore built with
//! no retries of their own: every failure reaches busway, which reopens links (and, when that
//! fails, the connection) and knows which deliveries came on a link that is gone.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use azservicebus::authorization::AzureNamedKeyCredential;
use azservicebus::core::BasicRetryPolicy;
use azservicebus::{ServiceBusClient, ServiceBusClientOptions, ServiceBusRetryOptions};
use azure_core::credentials::TokenCredential;
use busway_core::{Error, Result};
use secrecy::ExposeSecret;
use tokio::sync::{Mutex, MutexGuard};

use crate::config::{ServiceBusConfig, Target, Transport};
use crate::error::classify;

pub(crate) type Client = ServiceBusClient<BasicRetryPolicy>;

/// How long closing a link or a connection may take; a lost connection never answers.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest an open (a link, with its token put on the `$cbs` node) may take before the
/// connection is presumed lost: on a lost connection the client waits for answers forever.
const MAX_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to open another connection to the same namespace.
#[derive(Clone)]
pub(crate) struct Connector {
    target: Arc<Target>,
    credential: Option<Arc<dyn TokenCredential>>,
    options: ServiceBusClientOptions,
    connect_timeout: Duration,
    open_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(
        config: &ServiceBusConfig,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Self> {
        let target = config.target()?;
        if target.key.is_none() && credential.is_none() {
            return Err(Error::config(
                "servicebus.sas_key",
                "no shared access key: give sas_key_name and sas_key, a connection string, or connect with a token credential",
            ));
        }
        let try_timeout = config.operation_timeout.max(Duration::from_secs(1));
        let options = ServiceBusClientOptions {
            retry_options: ServiceBusRetryOptions {
                // See the module docs: busway retries and recovers by itself.
                max_retries: 0,
                try_timeout,
                ..ServiceBusRetryOptions::default()
            },
            ..ServiceBusClientOptions::default()
        };
        Ok(Self {
            target: Arc::new(target),
            credential,
            options,
            connect_timeout: try_timeout,
            open_timeout: try_timeout.min(MAX_OPEN_TIMEOUT),
        })
    }

    /// The namespace (or emulator `host:port`) connections go to.
    pub(crate) fn endpoint(&self) -> &str {
        &self.target.endpoint
    }

    /// Opens a connection.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let endpoint = self.target.endpoint.clone();
        if self.target.transport == Transport::PlainInsecure {
            tracing::warn!(
                endpoint = %endpoint,
                setting = "servicebus.insecure",
                "connecting with plain AMQP to a host that is not a loopback address: credentials cross the network unencrypted"
            );
        }
        let options = self.options.clone();
        let plain = self.target.transport.is_plain();
        let opening = async {
            match (&self.credential, &self.target.key) {
                (Some(credential), _) if plain => {
                    Client::unsecured()
                        .new_from_token_credential(endpoint.clone(), credential.clone(), options)
                        .await
                }
                (Some(credential), _) => {
                    Client::new_from_token_credential(endpoint.clone(), credential.clone(), options)
                        .await
                }
                (None, Some((name, key))) => {
                    let credential =
                        AzureNamedKeyCredential::new(name.clone(), key.expose_secret());
                    if plain {
                        Client::unsecured()
                            .new_from_named_key_credential(endpoint.clone(), credential, options)
                            .await
                    } else {
                        Client::new_from_named_key_credential(endpoint.clone(), credential, options)
                            .await
                    }
                }
                (None, None) => Err(azure_core::Error::message(
                    azure_core::error::ErrorKind::Credential,
                    "no credential",
                )),
            }
        };
        let result = tokio::time::timeout(self.connect_timeout, opening)
            .await
            .map_err(|_| Error::Timeout(format!("connecting to `{endpoint}`")))?;
        result.map_err(|e| match classify("connecting", &endpoint, e) {
            Error::Unroutable(m) | Error::Rejected(m) => Error::Connection {
                message: m,
                source: None,
            },
            other => other,
        })
    }
}

/// A connection that busway replaces when it is lost. Everything opened from it (senders,
/// receivers, rule managers) is opened through [`Connection::open`].
pub(crate) struct Connection {
    connector: Connector,
    state: Mutex<State>,
}

pub(crate) struct State {
    client: Option<Client>,
    /// Bumped on every replacement, so that several tasks noticing the same loss replace the
    /// connection once.
    generation: u64,
}

impl Connection {
    /// Connects.
    pub(crate) async fn connect(connector: Connector) -> Result<Self> {
        let client = connector.connect().await?;
        Ok(Self {
            connector,
            state: Mutex::new(State {
                client: Some(client),
                generation: 0,
            }),
        })
    }

    /// The namespace (or emulator `host:port`).
    pub(crate) fn endpoint(&self) -> &str {
        self.connector.endpoint()
    }

    /// How long one operation may take (the client's try timeout).
    pub(crate) fn operation_timeout(&self) -> Duration {
        self.connector.connect_timeout
    }

    /// Opens something on the connection with `open`; when that fails, replaces the connection
    /// (it may have been lost) and tries once more. Failures that say the request itself is
    /// wrong (a missing entity, a refused credential) are returned at once. The connection
    /// stays locked meanwhile, so that other opens wait for the replacement instead of trying
    /// the lost connection in turn.
    pub(crate) async fn open<T, F>(&self, what: &str, entity: &str, mut open: F) -> Result<T>
    where
        F: for<'c> FnMut(&'c mut Client) -> OpenFuture<'c, T>,
    {
        let timeout = self.connector.open_timeout;
        let mut state = self.state.lock().await;
        if let Some(client) = state.client.as_mut() {
            match timed(timeout, what, entity, open(client)).await {
                Ok(opened) => return Ok(opened),
                Err(err) if !err.is_transient() => return Err(err),
                Err(err) => {
                    tracing::debug!(error = %err, "opening failed; replacing the connection");
                }
            }
        }
        self.replace(&mut state).await?;
        let client = client_of(&mut state)?;
        timed(timeout, what, entity, open(client)).await
    }

    /// Replaces the connection, unless someone did since `seen` was current.
    async fn reconnect(&self, seen: u64) -> Result<()> {
        let mut state = self.state.lock().await;
        if state.generation != seen && state.client.is_some() {
            return Ok(());
        }
        self.replace(&mut state).await
    }

    async fn replace(&self, state: &mut State) -> Result<()> {
        let fresh = self.connector.connect().await?;
        state.generation += 1;
        if let Some(old) = state.client.replace(fresh) {
            // Links still on the old connection fail from now on and are reopened on the new one.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, old.dispose()).await;
            });
        }
        tracing::info!(endpoint = %self.endpoint(), "reconnected to Service Bus");
        Ok(())
    }

    /// Closes the connection; later opens reconnect.
    pub(crate) async fn close(&self) {
        let old = self.state.lock().await.client.take();
        if let Some(old) = old
            && let Ok(Err(e)) = tokio::time::timeout(CLOSE_TIMEOUT, old.dispose()).await
        {
            tracing::debug!(error = %e, "closing a connection");
        }
    }

    /// The current client and its generation, under the connection's lock: for operations
    /// that hold it longer than an open (accepting the next session waits until one is
    /// available). After such an operation fails, pass the generation to
    /// [`Connection::replace_after_failure`].
    pub(crate) async fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().await
    }

    /// Replaces the connection after an operation on it failed in a way that may mean it was
    /// lost, unless it was replaced since generation `seen`.
    pub(crate) async fn replace_after_failure(&self, seen: u64) -> Result<()> {
        self.reconnect(seen).await
    }
}

/// `opening`, classified, given up after `timeout`.
async fn timed<T>(
    timeout: Duration,
    what: &str,
    entity: &str,
    opening: OpenFuture<'_, T>,
) -> Result<T> {
    match tokio::time::timeout(timeout, opening).await {
        Ok(result) => result.map_err(|e| classify(what, entity, e)),
        Err(_) => Err(Error::Timeout(format!(
            "{what} on `{entity}` took longer than {timeout:?}"
        ))),
    }
}

/// The future of an [`Connection::open`] callback.
pub(crate) type OpenFuture<'c, T> =
    std::pin::Pin<Box<dyn Future<Output = std::result::Result<T, azure_core::Error>> + Send + 'c>>;

impl State {
    /// The client; `Closed` after [`Connection::close`].
    pub(crate) fn client(&mut self) -> Result<&mut Client> {
        client_of(self)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

fn client_of(state: &mut State) -> Result<&mut Client> {
    state
        .client
        .as_mut()
        .ok_or_else(|| Error::Closed("the Service Bus connection was closed".into()))
}
