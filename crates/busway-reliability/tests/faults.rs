//! Fault runs small enough for every CI run: real processes killed with SIGKILL, real
//! connections cut, real panics, against the brokers `scripts/test` provides. Nothing confirmed
//! may be lost; duplicates are allowed (at-least-once) and reported. RELIABILITY.md has the
//! 100,000-message runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const MESSAGES: &str = "3000";

/// Runs `busway-reliability run` with `args`, the broker settings in `env`; returns its outcome.
fn fault_run(name: &str, env: &[(&str, String)], args: &[&str]) -> Value {
    let workdir: PathBuf =
        std::env::temp_dir().join(format!("busway-reliability-{name}-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_busway-reliability"))
        .arg("run")
        .args(["--messages", MESSAGES, "--patience", "60"])
        .arg("--workdir")
        .arg(&workdir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "error")
        .output()
        .expect("run busway-reliability");
    assert!(
        output.status.success(),
        "{name}: the run failed: {}\nlogs in {}",
        String::from_utf8_lossy(&output.stderr),
        workdir.display()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcome: Value = serde_json::from_str(stdout.trim()).expect("an outcome as JSON");
    eprintln!("{name}: {}", outcome["tally"]);
    assert_eq!(
        outcome["tally"]["confirmed"], 3000,
        "{name}: the producer did not get every message confirmed"
    );
    assert_eq!(
        outcome["tally"]["lost"],
        0,
        "{name}: confirmed messages were lost; logs in {}",
        workdir.display()
    );
    let _ = std::fs::remove_dir_all(&workdir);
    outcome
}

fn rabbitmq_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BUSWAY_BROKER", "rabbitmq".into()),
        ("BUSWAY_RABBITMQ__URL", url.into()),
    ]
}

fn kafka_env(bootstrap: &str) -> Vec<(&'static str, String)> {
    // tansu 0.6 answers a fetch that starts inside a record batch with the batches after it,
    // skipping the rest of that batch (Kafka returns the whole batch). A consumer fetches from
    // inside a batch after pausing for backpressure, so on tansu the producer writes one record
    // per batch. See RELIABILITY.md.
    let config = std::env::temp_dir().join(format!(
        "busway-reliability-kafka-{}.toml",
        std::process::id()
    ));
    // A killed consumer also stays in its group until its session times out (45 s by default).
    std::fs::write(
        &config,
        "[kafka.extra]\n\"batch.num.messages\" = \"1\"\n\"session.timeout.ms\" = \"10000\"\n\"heartbeat.interval.ms\" = \"3000\"\n",
    )
    .unwrap();
    vec![
        ("BUSWAY_BROKER", "kafka".into()),
        ("BUSWAY_KAFKA__BOOTSTRAP_SERVERS", bootstrap.into()),
        ("BUSWAY_CONFIG", config.display().to_string()),
    ]
}

#[test]
fn memory_handler_panics_lose_nothing() {
    let outcome = fault_run(
        "memory-panics",
        &[("BUSWAY_BROKER", "memory".into())],
        &["--fault", "panics", "--panic-every", "50"],
    );
    assert_eq!(outcome["tally"]["duplicated"], 0);
}

#[tokio::test]
async fn rabbitmq_consumer_killed_loses_nothing() {
    let url = busway_testkit::fixtures::rabbitmq_url().await;
    fault_run(
        "rabbitmq-kill",
        &rabbitmq_env(&url),
        &["--fault", "kill-consumer", "--kills", "3"],
    );
}

#[tokio::test]
async fn rabbitmq_connections_cut_lose_nothing() {
    let url = busway_testkit::fixtures::rabbitmq_url().await;
    let mut parsed = url::Url::parse(&url).unwrap();
    let upstream = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5672)
    );
    let listen = free_port();
    parsed.set_port(Some(listen)).unwrap();
    fault_run(
        "rabbitmq-cut",
        &rabbitmq_env(parsed.as_str()),
        &[
            "--fault",
            "cut-connections",
            "--cuts",
            "2",
            "--proxy-listen",
            &format!("127.0.0.1:{listen}"),
            "--proxy-upstream",
            &resolve(&upstream),
        ],
    );
}

#[tokio::test]
async fn rabbitmq_handler_panics_lose_nothing() {
    let url = busway_testkit::fixtures::rabbitmq_url().await;
    fault_run(
        "rabbitmq-panics",
        &rabbitmq_env(&url),
        &["--fault", "panics", "--panic-every", "50"],
    );
}

#[tokio::test]
async fn kafka_consumer_killed_loses_nothing() {
    let bootstrap = busway_testkit::fixtures::kafka_bootstrap().await;
    fault_run(
        "kafka-kill",
        &kafka_env(&bootstrap),
        // The replacement joins once the killed member's 10 s session is over: tansu 0.6 gives
        // a group no working leader when a member joins while a killed one is still in it
        // (every member then gets no partitions, for good). See RELIABILITY.md.
        &[
            "--fault",
            "kill-consumer",
            "--kills",
            "3",
            "--replace-after",
            "12",
        ],
    );
}

#[tokio::test]
async fn kafka_handler_panics_lose_nothing() {
    let bootstrap = busway_testkit::fixtures::kafka_bootstrap().await;
    fault_run(
        "kafka-panics",
        &kafka_env(&bootstrap),
        &["--fault", "panics", "--panic-every", "50"],
    );
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `host:port` as a socket address.
fn resolve(host_port: &str) -> String {
    use std::net::ToSocketAddrs;
    host_port
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
        .to_string()
}
