//! Helpers shared by the adapter's integration tests: a broker handle on the test RabbitMQ, and
//! cutting its connections from the broker side.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[allow(unused_imports)]
pub use busway_testkit::proxy;

use std::sync::Arc;
use std::time::Duration;

use busway_rabbitmq::{QueueType, RabbitMqBroker, RabbitMqConfig};
use busway_testkit::{Expectations, Harness};

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

/// Runs `rabbitmqctl` with `args`, failing the test when it fails.
pub async fn rabbitmqctl(args: &[&str]) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl must be on PATH (scripts/test installs RabbitMQ)");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed: {out:?}");
}

/// `name` as a regular expression matching exactly that name (RabbitMQ policy patterns).
fn exactly(name: &str) -> String {
    let mut pattern = String::from("^");
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('$');
    pattern
}

/// Makes the broker refuse (`true`) or accept again (`false`) what is published to `queue`: a
/// policy with `max-length` 0 and `overflow` `reject-publish`, so every publish routed to it is
/// nacked (a real broker refusal, as a full queue gives). Policies apply to queues by name, so
/// this works before the queue exists too. The policy outranks the `^bw-` expiry policy
/// scripts/test sets (only one policy applies to a queue), so it repeats the expiry.
pub async fn refuse_publishes_to(queue: &str, refuse: bool) {
    let policy = format!("busway-test-refuse-{queue}");
    if refuse {
        rabbitmqctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "--priority",
            "100",
            &policy,
            &exactly(queue),
            r#"{"max-length":0,"overflow":"reject-publish","expires":3600000}"#,
        ])
        .await;
    } else {
        rabbitmqctl(&["clear_policy", &policy]).await;
    }
}

/// The size limit of the conformance harnesses.
pub const CONFORMANCE_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The conformance harness on the test broker, its queues of `queue_type`, with real broker
/// faults: the broker closes this harness's connections (restart, cut) and refuses a group's
/// dead letters through a queue-length policy on its DLQ.
pub async fn harness(queue_type: QueueType) -> Harness {
    let (config, name) = config("conformance").await;
    let broker = connect(
        config
            .queue_type(queue_type)
            .max_message_bytes(CONFORMANCE_MAX_MESSAGE_BYTES),
    )
    .await;
    // Only this harness's connections are closed (CONNECTION_FORCED, as a broker restart or an
    // operator gives), so the scenarios running in parallel on the shared broker are left alone.
    let close_ours = move || {
        let name = name.clone();
        Box::pin(async move {
            let closed = close_connections(&name).await;
            assert!(
                closed >= 2,
                "expected to close the publishing and consuming connections, closed {closed}"
            );
        }) as futures::future::BoxFuture<'static, ()>
    };
    let restart: busway_testkit::conformance::Restart = Arc::new(close_ours.clone());
    let cut: busway_testkit::conformance::BrokerAction = Arc::new(close_ours);
    Harness::new(broker)
        .expectations(Expectations {
            max_message_bytes: CONFORMANCE_MAX_MESSAGE_BYTES,
            large_message_bytes: 3 * 1024 * 1024,
            members_share_load: true,
            patience: Duration::from_secs(30),
            quiet_period: Duration::from_millis(500),
            // Message TTLs are in whole milliseconds and expire no earlier than due.
            timing_tolerance: Duration::from_millis(50),
        })
        .restart(restart)
        .cut_connections(cut)
        .refuse_dead_letters(Arc::new(|topic, group, refuse| {
            Box::pin(async move {
                refuse_publishes_to(&format!("{topic}.{group}.dlq"), refuse).await;
            })
        }))
}
