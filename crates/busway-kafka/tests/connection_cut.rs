//! `connection_cut_redelivers_unsettled` against a private tansu whose every client connection
//! goes through a TCP proxy: tansu advertises the proxy's address, so the bootstrap connection
//! and each broker connection librdkafka opens later all pass through it, and cutting the
//! proxy's connections cuts every connection of the harness's clients, as a network failure
//! would. The shared broker is left alone: other tests use its connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use busway_kafka::KafkaBroker;
use busway_testkit::proxy::Proxy;
use busway_testkit::{Expectations, Harness};

/// The private broker and its proxy live in the cut hook, so they die with the harness.
async fn harness() -> Harness {
    common::init_logs();
    let port = common::free_port();
    let proxy = Proxy::start(([127, 0, 0, 1], port).into()).await;
    let tansu = common::Tansu::start_behind(port, proxy.addr).await;
    let broker = KafkaBroker::connect(common::config(&tansu.bootstrap()))
        .await
        .expect("connect to tansu through the proxy");
    let cut: busway_testkit::conformance::BrokerAction = Arc::new(move || {
        let _keep = &tansu;
        proxy.cut();
        Box::pin(async {})
    });
    Harness::new(broker)
        .expectations(Expectations {
            patience: Duration::from_secs(60),
            quiet_period: Duration::from_secs(1),
            ..Expectations::default()
        })
        .cut_connections(cut)
}

busway_testkit::conformance_suite! {
    harness: harness,
    // Every other scenario runs on the shared broker, in tests/conformance.rs.
    only: [connection_cut_redelivers_unsettled],
}
