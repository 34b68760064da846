//! One client connection: its AMQP sessions, and the routing of each link attach to the node it
//! names (`$cbs`, `<entity>/$management`, or an entity).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAnonymousMechanism,
    SessionAcceptor, SupportedReceiverSettleModes,
};
use fe2o3_amqp_types::{
    definitions::{Fields, ReceiverSettleMode, Role, SenderSettleMode},
    messaging::{DeliveryState, TargetArchetype},
    performatives::Attach,
    primitives::{Symbol, Value},
};
use serde_amqp::{described::Described, descriptor::Descriptor};
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};

use crate::{
    amqp::{self, Reply, StatusNames, app_property},
    cbs::{Claims, SasKeys},
    entity::{Broker, OpError, Source, address_path, entity_key},
    link::{self, Delivering, amqp_error},
    management::{self, ManagementNode},
    wire::{Settle, WireShim},
};

const SESSION_FILTER: &str = "com.microsoft:session-filter";
const SESSION_FILTER_CODE: u64 = 0x0000_0013_7000_000c;
const LOCKED_UNTIL_UTC: &str = "com.microsoft:locked-until-utc";

static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub broker: Arc<Broker>,
    pub keys: SasKeys,
    /// How long an "accept next session" attach waits for a session with messages.
    pub session_wait: Duration,
}

/// Per-connection state.
struct Connection {
    shared: Arc<Shared>,
    claims: Mutex<Claims>,
    shutdown: watch::Receiver<bool>,
}

/// A `$cbs` / `$management` response link the client attached on this AMQP session.
struct ReplyLink {
    id: u64,
    /// The node it reads from (`$cbs` or `<entity key>/$management`).
    node: String,
    /// The link name the client chose.
    name: String,
    /// The target address the client gave it, if any.
    target: Option<String>,
    tx: mpsc::UnboundedSender<Reply>,
}

/// Per-AMQP-session state: the response links of request/response nodes.
struct SessionCtx {
    conn: Arc<Connection>,
    replies: Mutex<Vec<ReplyLink>>,
}

impl SessionCtx {
    /// Sends a reply on the response link the client attached for `node`.
    ///
    /// Service Bus answers on the client's response link whatever the request's `reply-to` says,
    /// and clients name that link differently: azservicebus sets `reply-to` to the response
    /// link's target address, `@azure/service-bus` (rhea) to the response link's name and gives
    /// the link no target, `azure-servicebus` (pyamqp) sets no `reply-to` at all and matches
    /// replies by correlation id. So `reply-to` picks among several response links of one node
    /// when it names one (by target, then by name); otherwise the newest response link of the
    /// node gets the reply (clients correlate replies by `correlation-id`).
    fn send_reply(&self, node: &str, reply_to: Option<&str>, reply: Reply) {
        let replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        let by_target = reply_to.and_then(|to| {
            replies
                .iter()
                .rev()
                .find(|l| l.target.as_deref() == Some(to))
        });
        let by_name = || reply_to.and_then(|to| replies.iter().rev().find(|l| l.name == to));
        let by_node = || replies.iter().rev().find(|l| l.node == node);
        match by_target.or_else(by_name).or_else(by_node) {
            Some(link) => {
                let _ = link.tx.send(reply);
            }
            None => tracing::debug!(
                node,
                ?reply_to,
                "no response link for request; reply dropped"
            ),
        }
    }

    fn remove_reply_link(&self, id: u64) {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|l| l.id != id);
    }
}

/// The request/response node an address names: `$cbs`, or `<entity key>/$management`.
fn node_key(address: &str) -> Option<String> {
    let path = address_path(address);
    if path.eq_ignore_ascii_case("$cbs") {
        return Some("$cbs".to_string());
    }
    management::node_path(address).map(|entity| format!("{}/$management", entity_key(&entity)))
}

/// Serves one TCP connection until the client closes it or the emulator shuts down.
pub(crate) async fn serve(
    stream: TcpStream,
    acceptor: Arc<ConnectionAcceptor<(), SaslAnonymousMechanism>>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let settler = BrokerSettler(shared.broker.clone());
    let mut connection = match acceptor.accept(WireShim::new(stream, settler)).await {
        Ok(c) => c,
        Err(error) => {
            tracing::debug!(%error, "connection handshake failed");
            return;
        }
    };
    let conn = Arc::new(Connection {
        shared,
        claims: Mutex::new(Claims::default()),
        shutdown: shutdown.clone(),
    });
    let session_acceptor = SessionAcceptor::new();
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            incoming = connection.next_incoming_session() => match incoming {
                Some(incoming) => {
                    match session_acceptor.accept_incoming_session(incoming, &mut connection).await {
                        Ok(session) => {
                            sessions.spawn(run_session(session, conn.clone()));
                        }
                        Err(error) => tracing::debug!(%error, "session refused"),
                    }
                }
                None => break,
            },
            _ = shutdown.changed() => break,
        }
    }
    // Sessions stop on their own once the connection is gone or shutdown was signalled.
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        sessions.abort_all();
    }
    if let Err(error) = connection.close().await {
        tracing::debug!(%error, "closing connection");
    }
}

/// Applies a receive link's disposition to the broker for the wire shim.
struct BrokerSettler(Arc<Broker>);

impl Settle for BrokerSettler {
    fn settle(
        &self,
        token: [u8; 16],
        outcome: &DeliveryState,
    ) -> Result<(), fe2o3_amqp_types::definitions::Error> {
        let Some(disposition) = link::disposition_of(outcome.clone()) else {
            return Ok(());
        };
        // The disposition arrives on the link the message was delivered on, which is the lock's
        // owner, so the broker checks the session lock against that owner.
        self.0.settle(&token, None, disposition).map_err(|error| {
            tracing::debug!(error = %error.description, "link settlement refused");
            amqp_error(&error)
        })
    }
}

/// An "accept next session" attach waiting for a session to have messages.
struct PendingSessionAttach {
    attach: Attach,
    source: Source,
    link: u64,
    deadline: Instant,
}

async fn run_session(mut session: ListenerSessionHandle, conn: Arc<Connection>) {
    let ctx = Arc::new(SessionCtx {
        conn: conn.clone(),
        replies: Mutex::new(Vec::new()),
    });
    let mut shutdown = conn.shutdown.clone();
    let mut changes = conn.shared.broker.subscribe();
    let mut pending: Vec<PendingSessionAttach> = Vec::new();
    loop {
        tokio::select! {
            attach = session.next_incoming_attach() => match attach {
                Some(attach) => route(attach, &mut session, &ctx, &mut pending).await,
                None => break,
            },
            _ = changes.changed(), if !pending.is_empty() => {
                retry_pending(&mut session, &ctx, &mut pending).await;
            }
            () = tokio::time::sleep(Duration::from_millis(50)), if !pending.is_empty() => {
                retry_pending(&mut session, &ctx, &mut pending).await;
            }
            _ = shutdown.changed() => break,
        }
    }
    if let Err(error) = session.end().await {
        tracing::debug!(%error, "ending session");
    }
}

/// The `reply-to` of a request, if it has one.
fn reply_to(request: &crate::entity::message::AmqpMessage) -> Option<&str> {
    request.properties.as_ref()?.reply_to.as_deref()
}

fn target_address(attach: &Attach) -> Option<String> {
    match attach.target.as_deref()? {
        TargetArchetype::Target(t) => t.address.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn source_address(attach: &Attach) -> Option<String> {
    attach.source.as_ref()?.address.clone()
}

/// Routes an attach to the node it names.
async fn route(
    attach: Attach,
    session: &mut ListenerSessionHandle,
    ctx: &Arc<SessionCtx>,
    pending: &mut Vec<PendingSessionAttach>,
) {
    let shared = ctx.conn.shared.clone();
    let shutdown = ctx.conn.shutdown.clone();
    match attach.role {
        // The client sends: we receive.
        Role::Sender => {
            let address = target_address(&attach).unwrap_or_default();
            let path = address_path(&address).to_string();
            if path.eq_ignore_ascii_case("$cbs") {
                if let Some(receiver) = accept_receiver(incoming_acceptor(), attach, session).await
                {
                    let ctx = ctx.clone();
                    tokio::spawn(link::receive_loop(receiver, shutdown, move |_, request| {
                        let reply = put_token(&ctx, &request);
                        ctx.send_reply("$cbs", reply_to(&request), reply);
                        Ok(())
                    }));
                }
            } else if let Some(entity) = management::node_path(&address) {
                let Some(node) = ManagementNode::resolve(&shared.broker, &entity) else {
                    return reject(attach, session, OpError::entity_not_found(&entity)).await;
                };
                if !authorized(ctx, &format!("{entity}/$management")) {
                    return reject(attach, session, unauthorized(&entity)).await;
                }
                if let Some(receiver) = accept_receiver(incoming_acceptor(), attach, session).await
                {
                    let ctx = ctx.clone();
                    let node_key = format!("{}/$management", entity_key(&entity));
                    tokio::spawn(link::receive_loop(receiver, shutdown, move |_, request| {
                        let reply = management::handle(&ctx.conn.shared.broker, &node, &request);
                        ctx.send_reply(&node_key, reply_to(&request), reply);
                        Ok(())
                    }));
                }
            } else {
                let Some(target) = shared.broker.send_target(&path) else {
                    return reject(attach, session, OpError::entity_not_found(&path)).await;
                };
                if !authorized(ctx, &path) {
                    return reject(attach, session, unauthorized(&path)).await;
                }
                // The link states the message size limit, as Service Bus does: the official SDKs
                // size their batches by it (@azure/service-bus does not recognise a batch
                // without it). A client that sends more anyway gets the message rejected with
                // message-size-exceeded and keeps a usable link.
                let max =
                    u64::try_from(shared.broker.limits().max_message_bytes).unwrap_or(u64::MAX);
                let acceptor = incoming_acceptor()
                    .into_builder()
                    .max_message_size(max)
                    .build();
                if let Some(receiver) = accept_receiver(acceptor, attach, session).await {
                    let handler = link::entity_handler(shared.broker.clone(), target);
                    tokio::spawn(link::receive_loop(receiver, shutdown, handler));
                }
            }
        }
        // The client receives: we send.
        Role::Receiver => {
            let address = source_address(&attach).unwrap_or_default();
            let path = address_path(&address).to_string();
            if let Some(node) = node_key(&address) {
                let (tx, rx) = mpsc::unbounded_channel();
                let id = NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed);
                // Registered before the attach completes so no request can miss its reply link.
                ctx.replies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(ReplyLink {
                        id,
                        node,
                        name: attach.name.clone(),
                        target: target_address(&attach),
                        tx,
                    });
                match accept_sender(LinkAcceptor::new(), attach, session).await {
                    Some(sender) => {
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            link::reply_loop(sender, rx, shutdown).await;
                            ctx.remove_reply_link(id);
                        });
                    }
                    None => ctx.remove_reply_link(id),
                }
                return;
            }
            let Some(source) = shared.broker.receive_source(&path) else {
                return reject(attach, session, OpError::entity_not_found(&path)).await;
            };
            if !authorized(ctx, &path) {
                return reject(attach, session, unauthorized(&path)).await;
            }
            let session_filter = attach
                .source
                .as_ref()
                .and_then(|s| s.filter.as_ref())
                .and_then(|f| f.get(SESSION_FILTER))
                .cloned();
            let link_id = NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed);
            let Some(filter) = session_filter else {
                if source.requires_session {
                    return reject(attach, session, OpError::not_allowed(format!(
                        "It is not possible for an entity that requires sessions to create a non-sessionful message receiver. TrackingId:emulator, SystemTracker:{path}"
                    )))
                    .await;
                }
                let receive_and_delete = attach.snd_settle_mode == SenderSettleMode::Settled;
                if let Some(sender) = accept_sender(LinkAcceptor::new(), attach, session).await {
                    let spec = Delivering {
                        broker: shared.broker.clone(),
                        source,
                        link: link_id,
                        session: None,
                        receive_and_delete,
                    };
                    tokio::spawn(link::delivery_loop(sender, spec, shutdown));
                }
                return;
            };
            if !source.requires_session {
                return reject(attach, session, OpError::not_allowed(format!(
                    "It is not possible for an entity that does not require sessions to create a sessionful message receiver: '{path}'"
                )))
                .await;
            }
            let requested = match &filter {
                Value::Described(d) => amqp::as_str(&d.value).map(str::to_string),
                other => amqp::as_str(other).map(str::to_string),
            };
            match shared
                .broker
                .accept_session(&source, requested.as_deref(), link_id)
            {
                Ok((id, until)) => {
                    accept_session_link(attach, session, ctx, source, link_id, id, until).await
                }
                Err(error) if requested.is_none() && error.status == 408 => {
                    pending.push(PendingSessionAttach {
                        attach,
                        source,
                        link: link_id,
                        deadline: Instant::now() + shared.session_wait,
                    });
                }
                Err(error) => reject(attach, session, error).await,
            }
        }
    }
}

async fn retry_pending(
    session: &mut ListenerSessionHandle,
    ctx: &Arc<SessionCtx>,
    pending: &mut Vec<PendingSessionAttach>,
) {
    let broker = ctx.conn.shared.broker.clone();
    let mut still_waiting = Vec::new();
    for waiting in pending.drain(..) {
        match broker.accept_session(&waiting.source, None, waiting.link) {
            Ok((id, until)) => {
                accept_session_link(
                    waiting.attach,
                    session,
                    ctx,
                    waiting.source,
                    waiting.link,
                    id,
                    until,
                )
                .await;
            }
            Err(error) if Instant::now() >= waiting.deadline => {
                reject(waiting.attach, session, error).await;
            }
            Err(_) => still_waiting.push(waiting),
        }
    }
    *pending = still_waiting;
}

/// Completes a session receiver's attach: the source echoes the session id it got, and the attach
/// properties carry the session lock's expiry.
async fn accept_session_link(
    mut attach: Attach,
    session: &mut ListenerSessionHandle,
    ctx: &Arc<SessionCtx>,
    source: Source,
    link_id: u64,
    id: String,
    locked_until: i64,
) {
    if let Some(filter) = attach.source.as_mut().and_then(|s| s.filter.as_mut()) {
        // The source comes back with the session id filled in, in the shape the client used:
        // the official SDKs send (and read back) a plain string, azservicebus a described one.
        let described = matches!(filter.get(SESSION_FILTER), Some(Value::Described(_)));
        let value = if described {
            Value::Described(Box::new(Described {
                descriptor: Descriptor::Code(SESSION_FILTER_CODE),
                value: Value::String(id.clone()),
            }))
        } else {
            Value::String(id.clone())
        };
        filter.insert(Symbol::from(SESSION_FILTER), value);
    }
    // Service Bus states the session lock's expiry as .NET ticks (a long), which is what the
    // official SDKs decode; azservicebus 0.25 only understands a timestamp here and then reports
    // 0001-01-01 (it learns the real expiry from renew-session-lock).
    let mut properties = Fields::default();
    properties.insert(
        Symbol::from(LOCKED_UNTIL_UTC),
        Value::Long(dotnet_ticks(locked_until)),
    );
    let acceptor = LinkAcceptor::builder().properties(properties).build();
    let broker = ctx.conn.shared.broker.clone();
    let receive_and_delete = attach.snd_settle_mode == SenderSettleMode::Settled;
    match accept_sender(acceptor, attach, session).await {
        Some(sender) => {
            let spec = Delivering {
                broker,
                source,
                link: link_id,
                session: Some(id),
                receive_and_delete,
            };
            tokio::spawn(link::delivery_loop(sender, spec, ctx.conn.shutdown.clone()));
        }
        None => broker.link_closed(link_id),
    }
}

/// Acceptor for links the client sends on.
///
/// The emulator settles every incoming delivery itself (rcv-settle-mode `first`), as Service
/// Bus does, whatever mode the client asks for: pyamqp senders request `second` but never settle
/// in answer to an unsettled disposition, so a `second`-mode receiver would leave their sends
/// waiting forever. A receiver's mode in its attach is authoritative; clients that cannot live with
/// `first` detach.
type DefaultLinkAcceptor = LinkAcceptor<
    fn(fe2o3_amqp_types::messaging::Source) -> Option<fe2o3_amqp_types::messaging::Source>,
    fn(fe2o3_amqp_types::messaging::Target) -> Option<fe2o3_amqp_types::messaging::Target>,
>;

fn incoming_acceptor() -> DefaultLinkAcceptor {
    LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .build()
}

/// .NET `DateTime` ticks (100 ns since 0001-01-01) of a Unix time in milliseconds.
fn dotnet_ticks(unix_ms: i64) -> i64 {
    const UNIX_EPOCH_TICKS: i64 = 621_355_968_000_000_000;
    unix_ms
        .saturating_mul(10_000)
        .saturating_add(UNIX_EPOCH_TICKS)
}

async fn accept_receiver<FS, FT>(
    acceptor: LinkAcceptor<FS, FT>,
    attach: Attach,
    session: &mut ListenerSessionHandle,
) -> Option<fe2o3_amqp::Receiver>
where
    FS: Fn(fe2o3_amqp_types::messaging::Source) -> Option<fe2o3_amqp_types::messaging::Source>,
    FT: Fn(fe2o3_amqp_types::messaging::Target) -> Option<fe2o3_amqp_types::messaging::Target>,
{
    match acceptor.accept_incoming_attach(attach, session).await {
        Ok(LinkEndpoint::Receiver(receiver)) => Some(receiver),
        Ok(LinkEndpoint::Sender(sender)) => {
            tokio::spawn(async move { sender.close().await });
            None
        }
        Err(error) => {
            tracing::debug!(%error, "attach failed");
            None
        }
    }
}

async fn accept_sender<FS, FT>(
    acceptor: LinkAcceptor<FS, FT>,
    attach: Attach,
    session: &mut ListenerSessionHandle,
) -> Option<fe2o3_amqp::Sender>
where
    FS: Fn(fe2o3_amqp_types::messaging::Source) -> Option<fe2o3_amqp_types::messaging::Source>,
    FT: Fn(fe2o3_amqp_types::messaging::Target) -> Option<fe2o3_amqp_types::messaging::Target>,
{
    match acceptor.accept_incoming_attach(attach, session).await {
        Ok(LinkEndpoint::Sender(sender)) => Some(sender),
        Ok(LinkEndpoint::Receiver(receiver)) => {
            tokio::spawn(async move { receiver.close().await });
            None
        }
        Err(error) => {
            tracing::debug!(%error, "attach failed");
            None
        }
    }
}

/// Refuses an attach the way Service Bus does: the terminus comes back null and the link is
/// detached with the error.
async fn reject(mut attach: Attach, session: &mut ListenerSessionHandle, error: OpError) {
    tracing::debug!(condition = error.condition, description = %error.description, "attach refused");
    match attach.role {
        Role::Sender => attach.target = None,
        Role::Receiver => attach.source = None,
    }
    let amqp_error = amqp_error(&error);
    match LinkAcceptor::new()
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(LinkEndpoint::Sender(sender)) => {
            tokio::spawn(async move { sender.close_with_error(amqp_error).await });
        }
        Ok(LinkEndpoint::Receiver(receiver)) => {
            tokio::spawn(async move { receiver.close_with_error(amqp_error).await });
        }
        Err(e) => tracing::debug!(error = %e, "refused attach ended"),
    }
}

fn authorized(ctx: &SessionCtx, path: &str) -> bool {
    ctx.conn
        .claims
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .covers(path)
}

fn unauthorized(path: &str) -> OpError {
    OpError::unauthorized(format!(
        "Unauthorized access. No valid token was put on $cbs for '{path}'."
    ))
}

/// Handles a `put-token` request on `$cbs`.
fn put_token(ctx: &SessionCtx, request: &crate::entity::message::AmqpMessage) -> Reply {
    let id = request
        .properties
        .as_ref()
        .and_then(|p| p.message_id.clone());
    let operation = app_property(request, "operation").unwrap_or_default();
    if operation != "put-token" {
        return amqp::error_reply(
            StatusNames::Cbs,
            id,
            &OpError::not_allowed(format!("unsupported $cbs operation '{operation}'")),
        );
    }
    let name = app_property(request, "name").unwrap_or_default();
    let token = match &request.body {
        fe2o3_amqp_types::messaging::Body::Value(v) => amqp::as_str(&v.0).unwrap_or_default(),
        _ => "",
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    match ctx.conn.shared.keys.validate(token, &name, now) {
        Ok(path) => {
            ctx.conn
                .claims
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .grant(path);
            amqp::reply(StatusNames::Cbs, id, 202, "Accepted", None, Value::Null)
        }
        Err(reason) => {
            tracing::debug!(%name, %reason, "put-token refused");
            amqp::error_reply(
                StatusNames::Cbs,
                id,
                &OpError::unauthorized(format!("InvalidSignature: {reason}")),
            )
        }
    }
}
