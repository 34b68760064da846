//! Helpers shared by the adapter's integration tests: a broker handle on the test RabbitMQ, and
//! cutting its connections from the broker side.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[allow(unused_imports)]
pub use busway_testkit::proxy;

use busway_rabbitmq::{RabbitMqBroker, RabbitMqConfig};

/// The test broker's URL (`BUSWAY_RABBITMQ_URL`, or a testcontainers RabbitMQ).
pub async fn url() -> String {
    busway_testkit::fixtures::rabbitmq_url().await
}

/// A name no other test uses, for connections and topics.
pub fn unique(what: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("bw-{what}-{}", &id[..12])
}

/// A config for the test broker whose connections carry a unique name (returned), so that a
/// test can close exactly its own connections.
pub async fn config(what: &str) -> (RabbitMqConfig, String) {
    let name = unique(what);
    (
        RabbitMqConfig::new(url().await).connection_name(name.clone()),
        name,
    )
}

/// Connects with `config`.
pub async fn connect(config: RabbitMqConfig) -> RabbitMqBroker {
    RabbitMqBroker::connect(config)
        .await
        .expect("connect to the test RabbitMQ")
}

/// Closes, from the broker side (`rabbitmqctl close_connection`), every connection whose
/// client-provided name contains `name`, as a broker restart or an operator would; returns how
/// many were closed. Needs `rabbitmqctl` (the broker `scripts/test` provisions).
pub async fn close_connections(name: &str) -> usize {
    let listed = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .await
        .expect("rabbitmqctl must be on PATH to cut connections (scripts/test installs RabbitMQ)");
    assert!(
        listed.status.success(),
        "rabbitmqctl list_connections failed: {listed:?}"
    );
    let text = String::from_utf8_lossy(&listed.stdout);
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(name)) {
        let Some(pid) = line.split('\t').next() else {
            continue;
        };
        let out = tokio::process::Command::new("rabbitmqctl")
            .args([
                "close_connection",
                pid,
                "busway test: simulated broker restart",
            ])
            .output()
            .await
            .expect("rabbitmqctl close_connection");
        if out.status.success() {
            closed += 1;
        }
    }
    closed
}
