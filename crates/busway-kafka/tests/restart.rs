//! `broker_restart_without_loss` against a private tansu (sqlite storage, so acknowledged
//! messages survive), killed and restarted mid-stream. The shared broker is left alone: other
//! conformance tests run on it at the same time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use busway_kafka::KafkaBroker;
use busway_testkit::{Expectations, Harness};
use tokio::sync::Mutex;

/// The private broker lives in the restart hook, so it dies with the harness.
async fn harness() -> Harness {
    let tansu = common::Tansu::start().await;
    let bootstrap = tansu.bootstrap();
    let tansu = Arc::new(Mutex::new(tansu));
    let broker = KafkaBroker::connect(common::config(&bootstrap))
        .await
        .expect("connect to tansu");
    let restart: busway_testkit::conformance::Restart = Arc::new(move || {
        let tansu = tansu.clone();
        Box::pin(async move { tansu.lock().await.restart().await })
    });
    Harness::new(broker)
        .expectations(Expectations {
            patience: Duration::from_secs(60),
            quiet_period: Duration::from_secs(1),
            ..Expectations::default()
        })
        .restart(restart)
}

busway_testkit::conformance_suite! {
    harness: harness,
    // Every other scenario runs on the shared broker, in tests/conformance.rs.
    only: [broker_restart_without_loss],
}
