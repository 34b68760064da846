//! Where the adapter's tests find a Service Bus, and the entities they use.
//!
//! 1. `BUSWAY_SERVICEBUS_CONNECTION_STRING` set: that namespace (real Azure or the official
//!    emulator), whose entities must match `docker/Config.json`.
//! 2. Docker available: testcontainers starts the official emulator and its SQL container with
//!    `docker/Config.json`, once per test binary.
//! 3. Otherwise (or with `BUSWAY_SERVICEBUS_IN_PROCESS=1`): busway-sb-emulator in process, on
//!    an ephemeral port, fresh for every test, with the same entities.
//!
//! Service Bus entities cannot be created over AMQP, so the tests use entities declared up
//! front. The conformance suite invents a topic name per scenario; [`Pooled`] allocates one of
//! the declared pool topics to each name and tells the adapter with
//! [`ServiceBusBroker::map_topic`], so the adapter itself reports the suite's topic in
//! deliveries, dead-letter metadata and listings: nothing is renamed on the way back.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azservicebus::authorization::AzureNamedKeyCredential;
use azservicebus::core::BasicRetryPolicy;
use azservicebus::{
    ServiceBusClient, ServiceBusClientOptions, ServiceBusReceiveMode, ServiceBusReceiverOptions,
    ServiceBusRetryOptions, SubQueue,
};
use busway_core::{
    Broker, Capabilities, DeadLetter, DeadLetterQueue, DeadLetters, Message, Ordering, Publisher,
    Result, Scheduler, SubscribeOptions, Subscriber, Subscription,
};
use busway_sb_emulator::{
    CorrelationFilter, Emulator, EmulatorHandle, RuleConfig, SubscriptionConfig, TopicConfig,
};
use busway_servicebus::{ServiceBusBroker, ServiceBusConfig};
use chrono::{DateTime, Utc};

/// Topics the conformance pool hands out; each has the subscriptions of [`POOL_GROUPS`]. On a
/// shared server the whole suite draws from one pool, so it must cover every topic of every
/// scenario.
pub const POOL_TOPICS: usize = 28;
/// Session-enabled topics for per-key ordered groups; subscription `ordered`.
pub const SESSION_POOL_TOPICS: usize = 4;
/// The groups the conformance scenarios use.
pub const POOL_GROUPS: &[&str] = &[
    "g", "workers", "group-0", "group-1", "group-2", "billing", "shipping", "late",
];
/// Lock duration of every subscription (the official emulator's minimum).
pub const LOCK: Duration = Duration::from_secs(5);
/// A shorter lock for the lock-renewal test (the in-process emulator allows it).
pub const SHORT_LOCK: Duration = Duration::from_secs(2);

pub fn pool_topic(i: usize) -> String {
    format!("bw-t{i:02}")
}

pub fn session_topic(i: usize) -> String {
    format!("bw-s{i:02}")
}

/// The entities of every test: the conformance pools plus one topic per adapter test.
pub fn entities() -> Vec<TopicConfig> {
    let sub = |name: &str, lock: Duration| {
        let mut s = SubscriptionConfig::new(name);
        s.properties.lock_duration = lock;
        s.properties.max_delivery_count = 10;
        s
    };
    let mut topics = Vec::new();
    for i in 0..POOL_TOPICS {
        let mut t = TopicConfig::new(pool_topic(i));
        for g in POOL_GROUPS {
            t = t.subscription(sub(g, LOCK));
        }
        topics.push(t);
    }
    for i in 0..SESSION_POOL_TOPICS {
        let mut s = sub("ordered", LOCK);
        s.properties.requires_session = true;
        topics.push(TopicConfig::new(session_topic(i)).subscription(s));
    }
    let mut sessions = sub("ordered", LOCK);
    sessions.properties.requires_session = true;
    topics.push(TopicConfig::new("adapter-sessions").subscription(sessions));
    topics.push(TopicConfig::new("adapter-slow").subscription(sub("g", SHORT_LOCK)));
    let mut slow_sessions = sub("ordered", SHORT_LOCK);
    slow_sessions.properties.requires_session = true;
    topics.push(TopicConfig::new("adapter-slow-session").subscription(slow_sessions));
    topics.push(
        TopicConfig::new("adapter-dedup")
            .duplicate_detection(Duration::from_secs(60))
            .subscription(sub("g", LOCK)),
    );
    topics.push(TopicConfig::new("adapter-dlq").subscription(sub("g", LOCK)));
    topics.push(TopicConfig::new("adapter-undecodable").subscription(sub("g", LOCK)));
    topics.push(
        TopicConfig::new("adapter-routing")
            .subscription(sub("a", LOCK))
            .subscription(sub("b", LOCK)),
    );
    // Never given rules by any test: what a key without Manage rights finds.
    topics.push(TopicConfig::new("adapter-norules").subscription(sub("g", LOCK)));
    // Rules of the users' own: one that would also take other groups' copies, one that
    // excludes them as busway asks.
    topics.push(
        TopicConfig::new("adapter-own-rules")
            .subscription(sub("billing", LOCK))
            .subscription(
                sub("filtered", LOCK).rule(RuleConfig::sql("adapter-only", ADAPTER_TYPE_FILTER)),
            )
            .subscription(sub("guarded", LOCK).rule(RuleConfig::sql(
                "adapter-only",
                format!("({ADAPTER_TYPE_FILTER}) AND [busway-group] IS NULL"),
            ))),
    );
    // busway's rules installed by the infrastructure, for a key without Manage rights.
    topics.push(
        TopicConfig::new("adapter-durable").subscription(
            sub("g", SHORT_LOCK)
                .rule(RuleConfig::sql(
                    "busway-broadcast",
                    "[busway-group] IS NULL",
                ))
                .rule(RuleConfig::correlation(
                    "busway-direct",
                    CorrelationFilter {
                        properties: [("busway-group".to_owned(), serde_json::json!("g"))]
                            .into_iter()
                            .collect(),
                        ..CorrelationFilter::default()
                    },
                )),
        ),
    );
    topics.push(TopicConfig::new("adapter-inflight").subscription(sub("g", LOCK)));
    topics.push(TopicConfig::new("adapter-cut").subscription(sub("g", SHORT_LOCK)));
    topics.push(TopicConfig::new("adapter-mapped").subscription(sub("g", LOCK)));
    topics
}

/// The SQL filter of the users' own rules in `adapter-own-rules`.
pub const ADAPTER_TYPE_FILTER: &str = "[cloudEvents_type] = 'busway.adapter'";

/// `docker/Config.json` as it must be: the official emulator's format for [`entities`]. Lock
/// durations below the official emulator's minimum (5 s) are raised to it.
pub fn docker_config() -> serde_json::Value {
    use serde_json::json;
    let iso = |d: Duration| format!("PT{}S", d.as_secs().max(5));
    let rule = |r: &RuleConfig| match &r.filter {
        busway_sb_emulator::RuleFilter::Sql(expression) => json!({
            "Name": r.name,
            "Properties": { "FilterType": "Sql", "SqlFilter": { "SqlExpression": expression } },
        }),
        busway_sb_emulator::RuleFilter::Correlation(c) => json!({
            "Name": r.name,
            "Properties": {
                "FilterType": "Correlation",
                "CorrelationFilter": { "Properties": c.properties },
            },
        }),
    };
    let topics: Vec<serde_json::Value> = entities()
        .iter()
        .map(|t| {
            let subscriptions: Vec<serde_json::Value> = t
                .subscriptions
                .iter()
                .map(|s| {
                    json!({
                        "Name": s.name,
                        "Properties": {
                            "DeadLetteringOnMessageExpiration": false,
                            "DefaultMessageTimeToLive": "PT1H",
                            "LockDuration": iso(s.properties.lock_duration),
                            "MaxDeliveryCount": s.properties.max_delivery_count,
                            "ForwardDeadLetteredMessagesTo": "",
                            "ForwardTo": "",
                            "RequiresSession": s.properties.requires_session,
                        },
                        "Rules": s.rules.iter().map(rule).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "Name": t.name,
                "Properties": {
                    "DefaultMessageTimeToLive": "PT1H",
                    "DuplicateDetectionHistoryTimeWindow": if t.duplicate_detection.enabled {
                        iso(t.duplicate_detection.window)
                    } else {
                        "PT20S".to_owned()
                    },
                    "RequiresDuplicateDetection": t.duplicate_detection.enabled,
                },
                "Subscriptions": subscriptions,
            })
        })
        .collect();
    json!({
        "UserConfig": {
            "Namespaces": [{ "Name": "sbemulatorns", "Queues": [], "Topics": topics }],
            "Logging": { "Type": "File" },
        }
    })
}

/// A Service Bus for one test.
pub struct Server {
    pub config: ServiceBusConfig,
    /// Shared with other tests (and earlier runs): entities must be emptied before use.
    pub shared: bool,
    /// The in-process emulator, kept alive as long as the server.
    pub emulator: Option<EmulatorHandle>,
}

impl Server {
    /// Lock duration of the `adapter-slow` subscription on this server.
    pub fn short_lock(&self) -> Duration {
        if self.emulator.is_some() {
            SHORT_LOCK
        } else {
            LOCK
        }
    }

    /// A connection string for another process: the emulator's, or the shared server's.
    pub fn connection_string(&self) -> String {
        use secrecy::ExposeSecret;
        match (&self.emulator, &self.config.connection_string) {
            (Some(emulator), _) => emulator.connection_string(),
            (None, Some(cs)) => cs.expose_secret().to_owned(),
            (None, None) => panic!("a shared server has a connection string"),
        }
    }

    /// A TCP proxy in front of this server, to cut connections; plain AMQP (emulators) only:
    /// through a proxy a TLS namespace's certificate would not match.
    pub async fn proxy(&self) -> Option<Arc<busway_testkit::proxy::Proxy>> {
        let (endpoint, _, _, plain) = raw_credentials(&self.config);
        if !plain {
            return None;
        }
        let upstream = tokio::net::lookup_host(endpoint).await.ok()?.next()?;
        Some(busway_testkit::proxy::Proxy::start(upstream).await)
    }

    /// This server's settings with connections going through `proxy`.
    pub fn config_through(&self, proxy: &busway_testkit::proxy::Proxy) -> ServiceBusConfig {
        let (_, name, key, _) = raw_credentials(&self.config);
        ServiceBusConfig {
            lock_renewal: self.config.lock_renewal,
            ..ServiceBusConfig::emulator(proxy.addr.to_string(), name, key)
        }
    }

    pub async fn broker(&self) -> ServiceBusBroker {
        ServiceBusBroker::connect(self.config.clone())
            .await
            .expect("the adapter connects")
    }

    /// The plain azservicebus client, connected to the same server.
    pub async fn raw_client(&self) -> ServiceBusClient<BasicRetryPolicy> {
        let options = ServiceBusClientOptions {
            retry_options: ServiceBusRetryOptions {
                max_retries: 0,
                try_timeout: Duration::from_secs(15),
                ..ServiceBusRetryOptions::default()
            },
            ..ServiceBusClientOptions::default()
        };
        let (endpoint, name, key, plain) = raw_credentials(&self.config);
        let credential = AzureNamedKeyCredential::new(name, key);
        let client = if plain {
            ServiceBusClient::unsecured()
                .new_from_named_key_credential(endpoint, credential, options)
                .await
        } else {
            ServiceBusClient::new_from_named_key_credential(endpoint, credential, options).await
        };
        client.expect("the plain client connects")
    }

    /// Empties a subscription and its dead-letter queue (shared servers only).
    pub async fn reset(&self, topic: &str, groups: &[&str]) {
        if !self.shared {
            return;
        }
        let mut client = self.raw_client().await;
        for group in groups {
            for sub_queue in [SubQueue::None, SubQueue::DeadLetter] {
                let options = ServiceBusReceiverOptions {
                    receive_mode: ServiceBusReceiveMode::ReceiveAndDelete,
                    sub_queue,
                    ..ServiceBusReceiverOptions::default()
                };
                let path = format!("{topic}/Subscriptions/{group}");
                let Ok(mut receiver) = client.create_receiver_for_queue(path, options).await else {
                    continue;
                };
                while let Ok(batch) = receiver
                    .receive_messages_with_max_wait_time(100, Duration::from_millis(500))
                    .await
                {
                    if batch.is_empty() {
                        break;
                    }
                }
                let _ = receiver.dispose().await;
            }
        }
        let _ = client.dispose().await;
    }
}

/// Endpoint, key name, key and whether the connection is plain AMQP (emulators).
fn raw_credentials(config: &ServiceBusConfig) -> (String, String, String, bool) {
    use secrecy::ExposeSecret;
    if let Some(cs) = &config.connection_string {
        let mut endpoint = String::new();
        let mut name = String::new();
        let mut key = String::new();
        let mut plain = config.emulator;
        for part in cs.expose_secret().split(';') {
            if let Some((k, v)) = part.split_once('=') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "endpoint" => {
                        endpoint = v
                            .trim()
                            .trim_start_matches("sb://")
                            .trim_end_matches('/')
                            .to_owned()
                    }
                    "sharedaccesskeyname" => name = v.trim().to_owned(),
                    "sharedaccesskey" => key = v.trim().to_owned(),
                    "usedevelopmentemulator" => plain |= v.trim().eq_ignore_ascii_case("true"),
                    _ => {}
                }
            }
        }
        return (endpoint, name, key, plain);
    }
    (
        config.endpoint.clone().unwrap_or_default(),
        config.sas_key_name.clone().unwrap_or_default(),
        config
            .sas_key
            .as_ref()
            .map(|k| k.expose_secret().to_owned())
            .unwrap_or_default(),
        config.emulator,
    )
}

/// The server of one test: env var, Docker, or an in-process emulator.
pub async fn server() -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    if let Some(cs) = std::env::var("BUSWAY_SERVICEBUS_CONNECTION_STRING")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return shared_server(cs);
    }
    // Docker without a reachable image registry would fail here: this variable keeps the
    // in-process emulator.
    let in_process = std::env::var_os("BUSWAY_SERVICEBUS_IN_PROCESS").is_some();
    if !in_process && containers::docker_available() {
        return shared_server(containers::connection_string().await);
    }
    let mut builder = Emulator::builder();
    for topic in entities() {
        builder = builder.topic(topic);
    }
    let emulator = builder
        .start()
        .await
        .expect("the in-process emulator starts");
    let config = ServiceBusConfig {
        lock_renewal: Duration::from_secs(120),
        ..ServiceBusConfig::emulator(
            emulator.namespace_endpoint(),
            emulator.sas_key_name(),
            emulator.sas_key(),
        )
    };
    Server {
        config,
        shared: false,
        emulator: Some(emulator),
    }
}

fn shared_server(connection_string: String) -> Server {
    Server {
        config: ServiceBusConfig {
            lock_renewal: Duration::from_secs(120),
            ..ServiceBusConfig::from_connection_string(connection_string)
        },
        shared: true,
        emulator: None,
    }
}

mod containers {
    //! The official emulator and its SQL Edge container, started once per test binary.

    use std::sync::OnceLock;
    use std::time::Duration;

    use testcontainers_modules::testcontainers::core::{IntoContainerPort, Mount, WaitFor};
    use testcontainers_modules::testcontainers::runners::SyncRunner;
    use testcontainers_modules::testcontainers::{Container, GenericImage, ImageExt};

    const PASSWORD: &str = "Busway-Test-Passw0rd!";

    pub fn docker_available() -> bool {
        std::env::var_os("DOCKER_HOST").is_some()
            || std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
    }

    struct Running {
        connection_string: String,
        _sql: Container<GenericImage>,
        _emulator: Container<GenericImage>,
    }

    static RUNNING: OnceLock<Running> = OnceLock::new();

    pub async fn connection_string() -> String {
        let handle = std::thread::spawn(|| RUNNING.get_or_init(launch).connection_string.clone());
        tokio::task::spawn_blocking(move || handle.join())
            .await
            .ok()
            .and_then(Result::ok)
            .expect("starting the Service Bus emulator containers failed")
    }

    fn launch() -> Running {
        let network = format!("busway-sb-{}", std::process::id());
        let sql_name = format!("busway-sql-{}", std::process::id());
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/Config.json");
        let sql = GenericImage::new("mcr.microsoft.com/azure-sql-edge", "latest")
            .with_wait_for(WaitFor::message_on_either_std("SQL Server is now ready"))
            .with_network(network.clone())
            .with_container_name(sql_name.clone())
            .with_env_var("ACCEPT_EULA", "Y")
            .with_env_var("MSSQL_SA_PASSWORD", PASSWORD)
            .with_startup_timeout(Duration::from_secs(300))
            .start()
            .expect("the SQL Edge container starts");
        let emulator = GenericImage::new(
            "mcr.microsoft.com/azure-messaging/servicebus-emulator",
            "latest",
        )
        .with_exposed_port(5672.tcp())
        .with_wait_for(WaitFor::message_on_either_std(
            "Emulator Service is Successfully Up!",
        ))
        .with_network(network)
        .with_env_var("ACCEPT_EULA", "Y")
        .with_env_var("SQL_SERVER", sql_name)
        .with_env_var("MSSQL_SA_PASSWORD", PASSWORD)
        .with_mount(Mount::bind_mount(
            config,
            "/ServiceBus_Emulator/ConfigFiles/Config.json",
        ))
        .with_startup_timeout(Duration::from_secs(300))
        .start()
        .expect("the Service Bus emulator container starts");
        let port = emulator
            .get_host_port_ipv4(5672.tcp())
            .expect("the emulator's AMQP port is mapped");
        Running {
            connection_string: format!(
                "Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
            ),
            _sql: sql,
            _emulator: emulator,
        }
    }
}

/// Pool allocation across every test of a binary, for shared servers.
static SHARED_NEXT_PLAIN: AtomicUsize = AtomicUsize::new(0);
static SHARED_NEXT_SESSION: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Names {
    to_pool: HashMap<String, String>,
    next_plain: usize,
    next_session: usize,
}

/// The adapter with the conformance suite's invented topic names mapped onto pool topics.
#[derive(Clone)]
pub struct Pooled {
    broker: ServiceBusBroker,
    server: Arc<Server>,
    names: Arc<Mutex<Names>>,
}

impl Pooled {
    pub async fn new(server: Server) -> Self {
        Self {
            broker: server.broker().await,
            server: Arc::new(server),
            names: Arc::default(),
        }
    }

    /// The pool topic standing for `topic`, allocated on first use.
    async fn map(&self, topic: &str, ordering: Ordering) -> String {
        let (pooled, fresh) = {
            let mut names = self.names.lock().unwrap();
            if let Some(p) = names.to_pool.get(topic) {
                return p.clone();
            }
            let pooled = match ordering {
                Ordering::PerKey => {
                    let i = if self.server.shared {
                        SHARED_NEXT_SESSION.fetch_add(1, AtomicOrdering::SeqCst)
                    } else {
                        names.next_session += 1;
                        names.next_session - 1
                    };
                    assert!(
                        i < SESSION_POOL_TOPICS,
                        "the session topic pool is exhausted"
                    );
                    session_topic(i)
                }
                Ordering::Unordered => {
                    let i = if self.server.shared {
                        SHARED_NEXT_PLAIN.fetch_add(1, AtomicOrdering::SeqCst)
                    } else {
                        names.next_plain += 1;
                        names.next_plain - 1
                    };
                    assert!(
                        i < POOL_TOPICS,
                        "the topic pool is exhausted; declare more pool topics"
                    );
                    pool_topic(i)
                }
            };
            names.to_pool.insert(topic.to_owned(), pooled.clone());
            (pooled, ordering)
        };
        self.broker.map_topic(topic, pooled.clone());
        let groups: &[&str] = match fresh {
            Ordering::PerKey => &["ordered"],
            Ordering::Unordered => POOL_GROUPS,
        };
        self.server.reset(&pooled, groups).await;
        pooled
    }

    /// The adapter under test.
    pub fn broker(&self) -> &ServiceBusBroker {
        &self.broker
    }

    /// Makes the in-process emulator refuse (or accept again) dead letters of `group` on the
    /// pool topic standing for `topic`. A real namespace has no such switch.
    pub async fn refuse_dead_letters(&self, topic: &str, group: &str, refuse: bool) {
        let pooled = self.map(topic, Ordering::Unordered).await;
        let emulator = self.server.emulator.as_ref().expect(
            "refusing dead letters needs the in-process busway-sb-emulator, not a real namespace",
        );
        emulator.refuse_dead_letters(&format!("{pooled}/Subscriptions/{group}"), refuse);
    }
}

// Each call allocates the pool topic on first use; the adapter is then called with the suite's
// own topic name and maps it itself.
#[async_trait]
impl Publisher for Pooled {
    async fn publish(&self, topic: &str, message: Message) -> Result<()> {
        self.map(topic, Ordering::Unordered).await;
        self.broker.publish(topic, message).await
    }
    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.map(topic, Ordering::Unordered).await;
        self.broker.publish_batch(topic, messages).await
    }
}

#[async_trait]
impl Scheduler for Pooled {
    async fn schedule(&self, topic: &str, message: Message, at: DateTime<Utc>) -> Result<()> {
        self.map(topic, Ordering::Unordered).await;
        self.broker.schedule(topic, message, at).await
    }
}

impl Broker for Pooled {
    fn capabilities(&self) -> Capabilities {
        self.broker.capabilities()
    }
    fn scheduler(self: Arc<Self>) -> Option<Arc<dyn Scheduler>> {
        Some(self)
    }
}

#[async_trait]
impl Subscriber for Pooled {
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        self.map(topic, options.ordering).await;
        self.broker.subscribe(topic, group, options).await
    }
}

#[async_trait]
impl DeadLetters for Pooled {
    async fn list(&self) -> Result<Vec<DeadLetterQueue>> {
        self.broker.list().await
    }
    async fn peek(&self, topic: &str, group: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        self.map(topic, Ordering::Unordered).await;
        self.broker.peek(topic, group, limit).await
    }
    async fn redrive(&self, topic: &str, group: &str, limit: Option<usize>) -> Result<usize> {
        self.map(topic, Ordering::Unordered).await;
        self.broker.redrive(topic, group, limit).await
    }
    async fn purge(&self, topic: &str, group: &str) -> Result<usize> {
        self.map(topic, Ordering::Unordered).await;
        self.broker.purge(topic, group).await
    }
}
