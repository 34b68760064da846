//! Hostile input and secret handling (issue #11, items 10, 11 and 17). Each test failed on
//! 1f6f772, before the fixes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Stdio, time::Duration};

use busway_sb_emulator::{Emulator, QueueConfig, RuleConfig, SubscriptionConfig, TopicConfig};
use common::*;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::Command,
};

const SECRET: &str = "s3cr3t-k3y-that-must-never-show";
/// Spelled out (not `busway_sb_emulator::KEY_ENV`) so the binary tests also build against
/// 1f6f772 and show its failures.
const KEY_ENV: &str = "BUSWAY_SB_EMULATOR_KEY";

/// Item 10: a peer announcing a 4 GiB frame before authenticating is cut off at once instead of
/// being buffered (on 1f6f772 the connection stayed open, waiting for the 4 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_before_authentication_closes_the_connection() {
    let emulator = start(Emulator::builder().queue(QueueConfig::new("q"))).await;
    for frame_type in [0x01u8, 0x00] {
        let mut stream = TcpStream::connect(emulator.local_addr()).await.unwrap();
        stream.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
        // size 0xFFFF_FFF0, doff 2, SASL or AMQP frame, channel 0: the body never comes.
        stream
            .write_all(&[0xff, 0xff, 0xff, 0xf0, 0x02, frame_type, 0x00, 0x00])
            .await
            .unwrap();
        let mut sink = Vec::new();
        // EOF or a reset both mean the emulator hung up; only a timeout is a failure.
        let _hung_up = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink))
            .await
            .expect("the emulator must close a connection announcing a 4 GiB frame");
    }
    // The emulator still serves well-behaved clients.
    let mut client = connect(&emulator).await;
    let mut s = sender(&mut client, "q").await;
    s.send_message(azservicebus::ServiceBusMessage::new("still served"))
        .await
        .unwrap();
    assert_eq!(emulator.message_counts("q"), Some((1, 0)));
    emulator.shutdown().await;
}

/// Item 11: a filter nesting thousands of levels is refused when the rule is created (on 1f6f772
/// parsing it overflowed the stack and aborted the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_sql_filters_are_refused_not_a_crash() {
    for expression in [
        format!("{}1=1{}", "(".repeat(50_000), ")".repeat(50_000)),
        format!("{}1=1", "NOT ".repeat(50_000)),
        format!("{}1=1{}", "(".repeat(500), ")".repeat(500)),
    ] {
        let result = Emulator::builder()
            .topic(TopicConfig::new("t").subscription(
                SubscriptionConfig::new("s").rule(RuleConfig::sql("deep", expression)),
            ))
            .start()
            .await;
        let error = result
            .expect_err("a pathological filter is refused")
            .to_string();
        assert!(
            error.contains("deeper") || error.contains("1024"),
            "the refusal says why: {error}"
        );
    }
}

/// Item 17: the handle's `Display`, `Debug` and the builder's `Debug` never show the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_appears_in_debug_or_display() {
    let builder = Emulator::builder()
        .queue(QueueConfig::new("q"))
        .sas_key("root", SECRET);
    assert!(!format!("{builder:?}").contains(SECRET));
    let emulator = builder.start().await.unwrap();
    let shown = format!("{emulator} {emulator:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains(busway_sb_emulator::REDACTED), "{shown}");
    assert!(
        emulator.connection_string().contains(SECRET),
        "the connection string for clients still carries the key"
    );
    emulator.shutdown().await;
    // Errors about the key name the file, not what is in it.
    let dir = std::env::temp_dir().join(format!("busway-sb-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let error = busway_sb_emulator::load_key(Some(&empty), Some(SECRET)).unwrap_err();
    assert!(!format!("{error} {error:?}").contains(SECRET));
    let missing = dir.join("missing");
    let error = busway_sb_emulator::load_key(Some(&missing), None).unwrap_err();
    assert!(format!("{error}").contains("missing"));
    let error = busway_sb_emulator::check_key_for_host("0.0.0.0", None).unwrap_err();
    assert!(format!("{error}").contains(busway_sb_emulator::KEY_ENV));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The binary's first output lines, within a few seconds; the process is killed afterwards.
async fn binary_output(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_busway-sb-emulator"));
    command
        .args(args)
        .env_remove(KEY_ENV)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut output = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut status = None;
    loop {
        tokio::select! {
            line = stdout.next_line() => if let Ok(Some(line)) = line {
                let running = line.starts_with("SharedAccessKey:");
                output.push_str(&line);
                output.push('\n');
                if running {
                    break;
                }
            },
            line = stderr.next_line() => if let Ok(Some(line)) = line {
                output.push_str(&line);
                output.push('\n');
            },
            exited = child.wait() => {
                status = Some(exited.unwrap().code().unwrap_or(-1));
                // Collect what it wrote before exiting.
                let rest = async {
                    while let Ok(Some(line)) = stdout.next_line().await {
                        output.push_str(&line);
                        output.push('\n');
                    }
                    while let Ok(Some(line)) = stderr.next_line().await {
                        output.push_str(&line);
                        output.push('\n');
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), rest).await;
                break;
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    let _ = child.start_kill();
    (status, output)
}

/// Items 10 and 17: the binary listens on loopback by default and does not print its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_listens_on_loopback_and_never_prints_its_key() {
    let (status, output) = binary_output(&["--port", "0"], &[(KEY_ENV, SECRET)]).await;
    assert_eq!(status, None, "the emulator keeps running: {output}");
    assert!(output.contains("Endpoint=sb://127.0.0.1:"), "{output}");
    assert!(!output.contains(SECRET), "the key was printed: {output}");
    assert!(
        output.contains(KEY_ENV),
        "it says where the key comes from: {output}"
    );
}

/// Item 17: a key on the command line is refused (other users can read process arguments), and
/// the public development key is refused on a non-loopback address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_no_key_on_the_command_line() {
    let (status, output) = binary_output(&["--port", "0", "--key", SECRET], &[]).await;
    assert!(
        status.is_some_and(|code| code != 0),
        "--key must be refused: {output}"
    );
    assert!(!output.contains(SECRET), "{output}");
    let (status, output) = binary_output(&["--port", "0", "--host", "0.0.0.0"], &[]).await;
    assert!(
        status.is_some_and(|code| code != 0),
        "the public key on 0.0.0.0 must be refused: {output}"
    );
}

/// Item 17: the key can come from a file, and clients signing with it get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_provides_the_key() {
    let path = std::env::temp_dir().join(format!("busway-sb-keyfile-{}", std::process::id()));
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let key = busway_sb_emulator::load_key(Some(&path), Some("ignored")).unwrap();
    assert_eq!(
        key.as_deref(),
        Some(SECRET),
        "the file wins over the variable"
    );
    let emulator = start(
        Emulator::builder()
            .queue(QueueConfig::new("q"))
            .sas_key("root", key.unwrap()),
    )
    .await;
    let mut client = connect_with_key(&emulator, "root", SECRET).await.unwrap();
    let mut s = client
        .create_sender("q", Default::default())
        .await
        .expect("a token signed with the file's key is accepted");
    s.send_message(azservicebus::ServiceBusMessage::new("ok"))
        .await
        .unwrap();
    let path_arg = path.display().to_string();
    let (status, output) =
        binary_output(&["--port", "0", "--key-file", &path_arg], &[(KEY_ENV, "x")]).await;
    assert_eq!(status, None, "{output}");
    assert!(!output.contains(SECRET), "{output}");
    std::fs::remove_file(&path).unwrap();
    emulator.shutdown().await;
}
