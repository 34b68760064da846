//! Shared helpers of the integration tests: the broker under test and a private tansu.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use busway_kafka::{KafkaBroker, KafkaConfig};
use tokio::process::{Child, Command};

/// A configuration for tests against `bootstrap`: small, quick, topics created on demand.
pub fn config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        partitions: 3,
        // Every scenario of the conformance suite names its group "g" on its own topic; one Kafka
        // group per topic keeps concurrent scenarios from rebalancing one another.
        group_id: "{group}.{topic}".into(),
        commit_interval: Duration::from_millis(200),
        close_timeout: Duration::from_secs(15),
        extra: test_extra(),
        ..KafkaConfig::default()
    }
}

/// Extra librdkafka properties for tests, from `BUSWAY_KAFKA_TEST_EXTRA=k=v,k=v` (none by
/// default: the tests run with the settings users get).
fn test_extra() -> std::collections::BTreeMap<String, String> {
    let mut extra = std::collections::BTreeMap::new();
    if let Ok(more) = std::env::var("BUSWAY_KAFKA_TEST_EXTRA") {
        for (k, v) in more.split(',').filter_map(|kv| kv.split_once('=')) {
            extra.insert(k.to_owned(), v.to_owned());
        }
    }
    extra
}

/// A broker on the shared test Kafka (`BUSWAY_KAFKA_BOOTSTRAP`, or a container).
pub async fn shared_broker() -> KafkaBroker {
    init_logs();
    let bootstrap = busway_testkit::fixtures::kafka_bootstrap().await;
    KafkaBroker::connect(config(&bootstrap))
        .await
        .expect("connect to the test Kafka")
}

/// The tansu binary `scripts/test` installed.
pub fn tansu_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BUSWAY_TANSU_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let cache = std::env::var_os("BUSWAY_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/busway")));
    if let Some(bin) = cache
        .map(|c| c.join("tools/bin/tansu"))
        .filter(|b| b.exists())
    {
        return bin;
    }
    panic!(
        "this test runs its own tansu broker: set BUSWAY_TANSU_BIN to a tansu 0.6 binary, or run \
         `scripts/test`, which installs one under $BUSWAY_CACHE/tools/bin"
    );
}

/// A tansu broker owned by one test, on its own port, storing to sqlite so that its data
/// survives [`Tansu::restart`].
pub struct Tansu {
    pub port: u16,
    /// Where clients are told to connect, when not straight to `port` (a proxy in front).
    advertised: Option<std::net::SocketAddr>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Tansu {
    pub async fn start() -> Self {
        Self::start_advertising(None).await
    }

    /// A broker on `port` that tells clients to connect to `advertised` instead (a proxy that
    /// forwards to `port`), so that every connection of every client goes through it.
    pub async fn start_behind(port: u16, advertised: std::net::SocketAddr) -> Self {
        let mut t = Self::new(port, Some(advertised));
        t.spawn().await;
        t
    }

    async fn start_advertising(advertised: Option<std::net::SocketAddr>) -> Self {
        let mut t = Self::new(free_port(), advertised);
        t.spawn().await;
        t
    }

    fn new(port: u16, advertised: Option<std::net::SocketAddr>) -> Self {
        let dir = std::env::temp_dir().join(format!("busway-tansu-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tansu data dir");
        Self {
            port,
            advertised,
            dir,
            child: None,
        }
    }

    /// Where clients bootstrap from.
    pub fn bootstrap(&self) -> String {
        match self.advertised {
            Some(addr) => addr.to_string(),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    async fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://{}", self.bootstrap());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .expect("tansu log");
        let child = Command::new(tansu_bin())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        wait_port(self.port).await;
    }

    /// Kills the broker and starts it again on the same port and data.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.spawn().await;
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_port(port: u16) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tansu did not listen on port {port} within 30 s");
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The committed offset of each partition of `topic` in Kafka group `group_id`, next to the
/// partition's high watermark: `(partition, committed, high)`.
pub fn commits(bootstrap: &str, group_id: &str, topic: &str) -> Vec<(i32, Option<i64>, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offset reader");
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .expect("metadata");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .expect("committed offsets");
    partitions
        .into_iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .expect("watermarks");
            let c = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            (p, c, high)
        })
        .collect()
}

/// Whether group `group_id` has committed every record of `topic` written so far (tansu's
/// high watermark may read short, never long: see [`count_records`]).
pub fn committed_everything(bootstrap: &str, group_id: &str, topic: &str) -> bool {
    commits(bootstrap, group_id, topic)
        .iter()
        .all(|(_, committed, high)| *high == 0 || committed.is_some_and(|c| c >= *high))
}

/// The records of `topic`, counted by reading it to its end. tansu 0.6's in-memory storage
/// answers a "latest offset" request with the first offset of the newest record batch plus one,
/// so watermarks undercount topics written in batches of several records.
pub fn count_records(bootstrap: &str, topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "busway-test-counter")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("record counter");
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .expect("metadata");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let (mut count, mut ended) = (0, std::collections::HashSet::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ended.len() < partitions.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} to its end took too long"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => count += 1,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    count
}
