//! Runs one case of an official Service Bus SDK's fidelity script (`tests/sdk/*_cases.*`) against
//! a fresh emulator, through the connection string a user would copy
//! (`UseDevelopmentEmulator=true`, with the port).
//!
//! The SDKs are installed by `scripts/test` (see `scripts/brokers/servicebus_sdks.sh`), which
//! exports `BUSWAY_SB_PYTHON` (a Python with `azure-servicebus`) and `BUSWAY_SB_NODE_MODULES`
//! (a `node_modules` with `@azure/service-bus`). Without them the tests fail and say so.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, process::Stdio, time::Duration};

use busway_sb_emulator::{
    CorrelationFilter, Emulator, EmulatorBuilder, QueueConfig, RuleConfig, SubscriptionConfig,
    TopicConfig,
};
use tokio::{io::AsyncReadExt, process::Command};

/// A case that runs longer than this has hung: it fails instead of blocking the suite.
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

/// Which official SDK runs the case.
#[derive(Debug, Clone, Copy)]
pub enum Sdk {
    /// `azure-servicebus` (pyamqp).
    Python,
    /// `@azure/service-bus` (rhea).
    JavaScript,
}

/// The entities every case may use; each test gets a fresh emulator holding them.
pub fn entities() -> EmulatorBuilder {
    let secs = Duration::from_secs;
    Emulator::builder()
        .queue(QueueConfig::new("q"))
        .queue(QueueConfig::new("q2"))
        .queue(QueueConfig::new("short-lock").lock_duration(secs(3)))
        .queue(QueueConfig::new("mdc").max_delivery_count(2))
        .queue(QueueConfig::new("ttl").default_message_ttl(secs(1)))
        .queue(
            QueueConfig::new("ttl-dl")
                .default_message_ttl(secs(1))
                .dead_lettering_on_message_expiration(true),
        )
        .queue(QueueConfig::new("dup").duplicate_detection(secs(20)))
        .queue(
            QueueConfig::new("sq")
                .requires_session(true)
                .lock_duration(secs(5)),
        )
        .topic(
            TopicConfig::new("t")
                .subscription(SubscriptionConfig::new("all"))
                .subscription(
                    SubscriptionConfig::new("red").rule(RuleConfig::sql("red", "color = 'red'")),
                )
                .subscription(SubscriptionConfig::new("vip").rule(RuleConfig::correlation(
                    "vip",
                    CorrelationFilter {
                        label: Some("vip".into()),
                        ..Default::default()
                    },
                )))
                .subscription(SubscriptionConfig::new("rules")),
        )
        .next_session_timeout(secs(3))
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: the official-SDK fidelity tests need it. Run `scripts/test` \
             (it installs the SDKs and exports it), or `eval \"$(scripts/test services)\"` \
             before `cargo test`."
        ),
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
}

/// Starts an emulator, runs `case` of the SDK's script against it and fails with the script's
/// output when the case fails or hangs.
pub async fn run(sdk: Sdk, case: &str) {
    let emulator = entities().start().await.expect("emulator starts");
    let mut command = match sdk {
        Sdk::Python => {
            let mut c = Command::new(required_env("BUSWAY_SB_PYTHON"));
            c.arg(script("python_cases.py"));
            c
        }
        Sdk::JavaScript => {
            let mut c = Command::new("node");
            c.env("NODE_PATH", required_env("BUSWAY_SB_NODE_MODULES"))
                .arg(script("js_cases.js"));
            c
        }
    };
    command
        .arg(case)
        .env("SB_CONNECTION_STRING", emulator.connection_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {sdk:?} SDK script: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let finished = tokio::time::timeout(CASE_TIMEOUT, async {
        let (_, _, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        status
    })
    .await;
    let output = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    );
    emulator.shutdown().await;
    match finished {
        Err(_) => panic!("{sdk:?} case {case:?} hung for {CASE_TIMEOUT:?}\n{output}"),
        Ok(Err(e)) => panic!("{sdk:?} case {case:?}: waiting for the script failed: {e}"),
        Ok(Ok(status)) if !status.success() => {
            panic!("{sdk:?} case {case:?} failed ({status})\n{output}")
        }
        Ok(Ok(_)) => assert!(
            String::from_utf8_lossy(&out).contains(&format!("PASS {case}")),
            "{sdk:?} case {case:?} exited 0 without reporting PASS\n{output}"
        ),
    }
}
