//! The cargo-fuzz targets of `fuzz/` (frame layer in, frame layer out, SQL filter parser), run on
//! the stable toolchain for a bounded time with deterministic pseudo-random inputs: mutations of
//! well-formed seeds (bit flips, splices, repeated and truncated spans, boundary sizes) and plain
//! random bytes. A panic fails the test and prints the input, in hex, to replay it.
//!
//! `BUSWAY_FUZZ_SECONDS` sets the time per target (default 5, at most 30);
//! `BUSWAY_FUZZ_SEED` picks another sequence; `BUSWAY_FUZZ_WRITE_SEEDS=DIR` also writes each
//! target's seeds to `DIR/<target>/` to start a cargo-fuzz corpus from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use busway_sb_emulator::fuzzing;

/// xorshift64*: small, deterministic, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn budget() -> Duration {
    let seconds = std::env::var("BUSWAY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(5)
        .min(30);
    Duration::from_secs(seconds)
}

fn seed() -> u64 {
    std::env::var("BUSWAY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b05e)
        | 1
}

/// Values that sit on the edges the frame layer checks.
const INTERESTING: [u32; 9] = [0, 7, 8, 9, 512, 513, 65_536, 65_537, u32::MAX];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] = rng.byte();
            }
            2 => {
                let other = &pool[rng.below(pool.len())];
                let at = rng.below(input.len() + 1);
                input.splice(at..at, other.iter().copied());
            }
            3 if input.len() > 1 => {
                let at = rng.below(input.len());
                input.truncate(at.max(1));
            }
            4 if input.len() >= 4 => {
                // Overwrite what may be a frame's size field.
                let at = rng.below(input.len() - 3);
                let value = INTERESTING[rng.below(INTERESTING.len())].to_be_bytes();
                input[at..at + 4].copy_from_slice(&value);
            }
            5 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(16)).min(input.len());
                let span: Vec<u8> = input[start..end].to_vec();
                for _ in 0..=rng.below(8) {
                    input.splice(start..start, span.iter().copied());
                }
            }
            _ => {
                let n = rng.below(32);
                input.extend((0..n).map(|_| rng.byte()));
            }
        }
    }
    input.truncate(256 * 1024);
}

/// Runs `target` on generated inputs until the budget is spent; returns the number of runs.
fn run(name: &str, pool: Vec<Vec<u8>>, target: Target) -> u64 {
    if let Ok(dir) = std::env::var("BUSWAY_FUZZ_WRITE_SEEDS") {
        let dir = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in pool.iter().enumerate() {
            // The wire targets read their first byte as read boundaries: 0 means one read.
            let mut bytes = if name.starts_with("wire") {
                vec![0]
            } else {
                Vec::new()
            };
            bytes.extend_from_slice(seed);
            std::fs::write(dir.join(format!("seed-{i}")), bytes).unwrap();
        }
    }
    let mut rng = Rng(seed());
    let deadline = Instant::now() + budget();
    let mut runs = 0u64;
    // Every seed as is, then mutations of seeds and of earlier inputs.
    let mut corpus = pool.clone();
    while runs < pool.len() as u64 || Instant::now() < deadline {
        let mut input = if runs < pool.len() as u64 {
            pool[usize::try_from(runs).unwrap()].clone()
        } else if rng.below(10) == 0 {
            (0..rng.below(64)).map(|_| rng.byte()).collect()
        } else {
            let mut base = corpus[rng.below(corpus.len())].clone();
            mutate(&mut rng, &mut base, &pool);
            base
        };
        // The first byte of the wire targets chooses read boundaries; give it variety.
        if rng.below(2) == 0 {
            input.insert(0, rng.byte());
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        if outcome.is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{name}: the target panicked on input {hex}");
        }
        if corpus.len() < 4096 && rng.below(8) == 0 {
            corpus.push(input);
        }
        runs += 1;
    }
    eprintln!("{name}: {runs} inputs in {:?}", budget());
    runs
}

fn wire_pool() -> Vec<Vec<u8>> {
    let seeds = fuzzing::inbound_seeds();
    // Whole conversations too: headers followed by every frame.
    let mut conversation = Vec::new();
    for seed in &seeds {
        conversation.extend_from_slice(seed);
    }
    let mut pool = seeds;
    pool.push(conversation);
    pool
}

#[test]
fn fuzz_wire_inbound() {
    assert!(run("wire_inbound", wire_pool(), fuzzing::wire_inbound) > 0);
}

#[test]
fn fuzz_wire_outbound() {
    assert!(run("wire_outbound", wire_pool(), fuzzing::wire_outbound) > 0);
}

#[test]
fn fuzz_sql_filter() {
    let pool = fuzzing::sql_seeds()
        .into_iter()
        .map(|s| s.as_bytes().to_vec())
        .chain(
            [
                "(", ")", " AND ", " OR ", "NOT ", " IN (", ",", "'", "=", "<>", " IS NULL",
                "EXISTS(", "[", "]", "-", "1.5", "sys.", "user.",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec()),
        )
        .collect();
    assert!(run("sql_filter", pool, fuzzing::sql_filter) > 0);
}

/// A fuzz target: it must not panic on any input.
type Target = fn(&[u8]);

/// Inputs that crashed a target once (`fuzz/regressions/<target>/`, copied from cargo-fuzz's
/// artifacts) stay harmless.
#[test]
fn fuzz_regressions() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let targets: [(&str, Target); 3] = [
        ("wire_inbound", fuzzing::wire_inbound),
        ("wire_outbound", fuzzing::wire_outbound),
        ("sql_filter", fuzzing::sql_filter),
    ];
    let mut replayed = 0;
    for (name, target) in targets {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
            assert!(outcome.is_ok(), "{name}: {} panics again", path.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "the regression inputs are missing");
}
