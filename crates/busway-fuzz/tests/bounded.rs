//! Every fuzz target, for a bounded time (`BUSWAY_FUZZ_SECONDS` per target, default 3), on the
//! stable toolchain. A crash fails the test with the input in hex and saved under the target
//! directory, ready to become a regression test and a cargo-fuzz corpus entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use busway_fuzz::TARGETS;
use busway_fuzz::bounded::{run, seeds};

const STRUCTURED: &[u8] = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"2024-01-01T00:00:00Z","datacontenttype":"application/json","data":{"n":[1,2.5,null]},"tenant":"acme"}"#;
const STRUCTURED_BASE64: &[u8] =
    br#"{"specversion":"1.0","id":"2","source":"/s","type":"t","data_base64":"3q2+7w=="}"#;
const FRAME: &[u8] = b"\x00\x00\x00\x00\x07\x02\x02\x04payload";

#[test]
fn every_target_survives_hostile_input() {
    let seconds: u64 = std::env::var("BUSWAY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let builtin: &[&[u8]] = &[STRUCTURED, STRUCTURED_BASE64, FRAME, b"", b"\x00"];
    let mut crashes = Vec::new();
    for (i, (name, target)) in TARGETS.iter().enumerate() {
        let seeds = seeds(&corpus, name, builtin);
        match run(
            *target,
            &seeds,
            Duration::from_secs(seconds),
            0x5eed + i as u64,
        ) {
            Ok(report) => eprintln!(
                "{name}: {} inputs in {:?}, no crash",
                report.executions, report.elapsed
            ),
            Err(crash) => {
                let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join(format!("{name}-{:x}", crash.input.len()));
                std::fs::write(&file, &crash.input).unwrap();
                crashes.push(format!(
                    "{name}: {} (input {} bytes, saved to {}): {:02x?}",
                    crash.message,
                    crash.input.len(),
                    file.display(),
                    &crash.input[..crash.input.len().min(256)]
                ));
            }
        }
    }
    assert!(crashes.is_empty(), "crashes:\n{}", crashes.join("\n"));
}
