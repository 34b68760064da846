//! Every fuzz target, for a bounded time (`BUSWAY_FUZZ_SECONDS` per target, default 3), on the
//! stable toolchain. A crash fails the test with the input in hex and saved under the target
//! directory, ready to become a regression test and a cargo-fuzz corpus entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use busway_fuzz::bounded::{run, seeds};
use busway_fuzz::{TARGETS, builtin_seeds};

#[test]
fn every_target_survives_hostile_input() {
    let seconds: u64 = std::env::var("BUSWAY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut crashes = Vec::new();
    for (i, (name, target)) in TARGETS.iter().enumerate() {
        let builtin = builtin_seeds(name);
        let builtin: Vec<&[u8]> = builtin.iter().map(Vec::as_slice).collect();
        let seeds = seeds(&corpus, name, &builtin);
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

/// Inputs that crashed a target once (`fuzz/regressions/<target>/`, from cargo-fuzz's
/// artifacts) are replayed on every run.
#[test]
fn past_crashes_stay_fixed() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for entry in entries.flatten() {
            let input = std::fs::read(entry.path()).unwrap();
            target(&input);
            replayed += 1;
        }
    }
    assert!(
        replayed >= 3,
        "the regression inputs were not found under {}",
        root.display()
    );
}
