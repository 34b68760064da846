//! Helpers shared by the fidelity tests: start an emulator, connect the unmodified azservicebus
//! client to it, and wait on conditions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{future::Future, time::Duration};

use azservicebus::{
    ServiceBusClient, ServiceBusClientOptions, ServiceBusReceiveMode, ServiceBusReceivedMessage,
    ServiceBusReceiver, ServiceBusReceiverOptions, ServiceBusRetryOptions, ServiceBusSender,
    ServiceBusSenderOptions, SubQueue, authorization::AzureNamedKeyCredential,
    core::BasicRetryPolicy,
};
use busway_sb_emulator::{EmulatorBuilder, EmulatorHandle};

/// Upper bound for any single wait in a test; generous so a loaded machine does not flake.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub type Client = ServiceBusClient<BasicRetryPolicy>;

pub async fn start(builder: EmulatorBuilder) -> EmulatorHandle {
    // `RUST_LOG=busway_sb_emulator=debug` shows the emulator's side of a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    builder.start().await.expect("emulator starts")
}

/// Client options without retries, so errors surface at once with the server's status.
pub fn options() -> ServiceBusClientOptions {
    ServiceBusClientOptions {
        retry_options: ServiceBusRetryOptions {
            max_retries: 0,
            try_timeout: Duration::from_secs(15),
            ..ServiceBusRetryOptions::default()
        },
        ..ServiceBusClientOptions::default()
    }
}

pub async fn connect(emulator: &EmulatorHandle) -> Client {
    connect_with_key(emulator, emulator.sas_key_name(), emulator.sas_key())
        .await
        .expect("client connects")
}

/// Connects with the given key; the error is rendered with `{:?}` so tests can look for the
/// server's status code and condition in it.
pub async fn connect_with_key(
    emulator: &EmulatorHandle,
    name: &str,
    key: &str,
) -> Result<Client, String> {
    ServiceBusClient::unsecured()
        .new_from_named_key_credential(
            emulator.namespace_endpoint(),
            AzureNamedKeyCredential::new(name, key),
            options(),
        )
        .await
        .map_err(|e| format!("{e:?}"))
}

pub async fn sender(client: &mut Client, entity: &str) -> ServiceBusSender {
    client
        .create_sender(entity, ServiceBusSenderOptions::default())
        .await
        .expect("sender")
}

pub async fn receiver(
    client: &mut Client,
    queue: &str,
    mode: ServiceBusReceiveMode,
) -> ServiceBusReceiver {
    receiver_with(client, queue, mode, SubQueue::None).await
}

pub async fn receiver_with(
    client: &mut Client,
    queue: &str,
    mode: ServiceBusReceiveMode,
    sub_queue: SubQueue,
) -> ServiceBusReceiver {
    client
        .create_receiver_for_queue(
            queue,
            ServiceBusReceiverOptions {
                receive_mode: mode,
                sub_queue,
                ..ServiceBusReceiverOptions::default()
            },
        )
        .await
        .expect("receiver")
}

/// Receives one message, polling the way a consumer does: short waits, repeated until
/// [`PATIENCE`] runs out. Each timed-out poll drains the link, so this also exercises the
/// emulator's repair of the client's stale flow after a drain (see `src/flow_fix.rs`).
pub async fn receive_one(receiver: &mut ServiceBusReceiver) -> ServiceBusReceivedMessage {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(message) = receiver
            .receive_message_with_max_wait_time(POLL)
            .await
            .expect("receive")
        {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message within {PATIENCE:?}"
        );
    }
}

/// One receive poll.
pub const POLL: Duration = Duration::from_millis(700);

/// Asserts that nothing arrives within `wait`.
pub async fn assert_empty(receiver: &mut ServiceBusReceiver, wait: Duration) {
    let got = receiver
        .receive_message_with_max_wait_time(wait)
        .await
        .expect("receive");
    assert!(
        got.is_none(),
        "expected no message, got {:?}",
        got.map(|m| body(&m))
    );
}

pub fn body(message: &ServiceBusReceivedMessage) -> String {
    String::from_utf8(message.body().expect("data body").to_vec()).expect("utf-8 body")
}

/// Polls `check` until it yields a value, failing after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a test body under an overall timeout so a hang fails instead of blocking the suite.
pub async fn within<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .expect("test finished within 60 s");
}
