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
    dir: PathBuf,
    child: Option<Child>,
}

impl Tansu {
    pub async fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("busway-tansu-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tansu data dir");
        let mut t = Self {
            port,
            dir,
            child: None,
        };
        t.spawn().await;
        t
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
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
                &url,
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

fn free_port() -> u16 {
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
