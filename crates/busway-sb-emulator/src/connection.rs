//! One client connection: its AMQP sessions, and the routing of each link attach to the node it
//! names (`$cbs`, `<entity>/$management`, or an entity).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SaslAnonymousMechanism,
    SessionAcceptor,
};
use fe2o3_amqp_types::{
    definitions::{Fields, Role, SenderSettleMode},
    messaging::TargetArchetype,
    performatives::Attach,
    primitives::{Symbol, Timestamp, Value},
};
use serde_amqp::{described::Described, descriptor::Descriptor};
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};

use crate::{
    amqp::{self, Reply, app_property},
    cbs::{Claims, SasKeys},
    entity::{Broker, OpError, Source, address_path},
    flow_fix::FlowFix,
    link::{self, Delivering, amqp_error},
    management::{self, ManagementNode},
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

/// Per-AMQP-session state: reply links by the client node address they deliver to.
struct SessionCtx {
    conn: Arc<Connection>,
    replies: Mutex<HashMap<String, mpsc::UnboundedSender<Reply>>>,
}

impl SessionCtx {
    fn send_reply(&self, to: Option<String>, reply: Reply) {
        let Some(to) = to else {
            tracing::debug!("request without reply-to dropped");
            return;
        };
        let replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        match replies.get(&to) {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => tracing::debug!(%to, "no reply link for request"),
        }
    }
}

/// Serves one TCP connection until the client closes it or the emulator shuts down.
pub(crate) async fn serve(
    stream: TcpStream,
    acceptor: Arc<ConnectionAcceptor<(), SaslAnonymousMechanism>>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connection = match acceptor.accept(FlowFix::new(stream)).await {
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
        replies: Mutex::new(HashMap::new()),
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
                if let Some(receiver) = accept_receiver(LinkAcceptor::new(), attach, session).await
                {
                    let ctx = ctx.clone();
                    tokio::spawn(link::receive_loop(receiver, shutdown, move |_, request| {
                        let reply_to = request.properties.as_ref().and_then(|p| p.reply_to.clone());
                        let reply = put_token(&ctx, &request);
                        ctx.send_reply(reply_to, reply);
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
                if let Some(receiver) = accept_receiver(LinkAcceptor::new(), attach, session).await
                {
                    let ctx = ctx.clone();
                    tokio::spawn(link::receive_loop(receiver, shutdown, move |_, request| {
                        let reply_to = request.properties.as_ref().and_then(|p| p.reply_to.clone());
                        let reply = management::handle(&ctx.conn.shared.broker, &node, &request);
                        ctx.send_reply(reply_to, reply);
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
                // No max-message-size on the link: an oversized message is received and rejected
                // with message-size-exceeded, so the client gets an outcome instead of a dead link.
                if let Some(receiver) = accept_receiver(LinkAcceptor::new(), attach, session).await
                {
                    let handler = link::entity_handler(shared.broker.clone(), target);
                    tokio::spawn(link::receive_loop(receiver, shutdown, handler));
                }
            }
        }
        // The client receives: we send.
        Role::Receiver => {
            let address = source_address(&attach).unwrap_or_default();
            let path = address_path(&address).to_string();
            if path.eq_ignore_ascii_case("$cbs") || management::node_path(&address).is_some() {
                let client_node = target_address(&attach).unwrap_or_default();
                let (tx, rx) = mpsc::unbounded_channel();
                // Registered before the attach completes so no request can miss its reply link.
                ctx.replies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client_node, tx);
                if let Some(sender) = accept_sender(LinkAcceptor::new(), attach, session).await {
                    tokio::spawn(link::reply_loop(sender, rx, shutdown));
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
        filter.insert(
            Symbol::from(SESSION_FILTER),
            Value::Described(Box::new(Described {
                descriptor: Descriptor::Code(SESSION_FILTER_CODE),
                value: Value::String(id.clone()),
            })),
        );
    }
    let mut properties = Fields::default();
    properties.insert(
        Symbol::from(LOCKED_UNTIL_UTC),
        Value::Timestamp(Timestamp::from_milliseconds(locked_until)),
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
            amqp::reply(id, 202, "Accepted", None, Value::Null)
        }
        Err(reason) => {
            tracing::debug!(%name, %reason, "put-token refused");
            amqp::error_reply(
                id,
                &OpError::unauthorized(format!("InvalidSignature: {reason}")),
            )
        }
    }
}
