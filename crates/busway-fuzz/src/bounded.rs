//! A small mutation fuzzer on the stable toolchain: random and mutated inputs (from seeds) for a
//! fixed time per target. No coverage feedback, so it finds less than libFuzzer per second; it
//! exists so that every CI run exercises every decoder with hostile input.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Target;

/// What a bounded run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// Inputs tried.
    pub executions: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

/// An input that made a target panic.
#[derive(Clone, Debug)]
pub struct Crash {
    /// The input.
    pub input: Vec<u8>,
    /// The panic's message.
    pub message: String,
}

/// Tokens that make inputs look like what the decoders parse.
const DICTIONARY: &[&[u8]] = &[
    b"{",
    b"}",
    b"\"",
    b":",
    b",",
    b"[",
    b"]",
    b"null",
    b"\"specversion\":\"1.0\"",
    b"\"id\":\"1\"",
    b"\"source\":\"/s\"",
    b"\"type\":\"t\"",
    b"\"time\":\"2024-01-01T00:00:00Z\"",
    b"\"data\":",
    b"\"data_base64\":\"AAEC\"",
    b"\"datacontenttype\":\"application/json\"",
    b"ce_",
    b"cloudEvents_",
    b"\x00\x00\x00\x00\x01",
    b"\\u0000",
    b"\xff\xff\xff\xff",
];

/// xorshift64*: deterministic per seed, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Seeds for `name`: files under `corpus_root/<name>/`, when there are any, plus `builtin`.
pub fn seeds(corpus_root: &Path, name: &str, builtin: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = builtin.iter().map(|s| s.to_vec()).collect();
    if let Ok(entries) = std::fs::read_dir(corpus_root.join(name)) {
        for entry in entries.flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                seeds.push(bytes);
            }
        }
    }
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    seeds
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..=rng.below(8) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = [0, 0xff, 0x7f, 0x80, b'"', b'{', b'\\', b'0'][rng.below(8)];
            }
            2 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(16)).min(len);
                input.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(32)).min(len);
                let copy = input[from..to].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, copy);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[from..].iter().copied());
                }
            }
            6 => input.truncate(rng.below(len + 1)),
            _ => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let random: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, random);
            }
        }
        // Bounded inputs keep each execution fast.
        input.truncate(64 * 1024);
    }
}

/// Runs `target` on mutated seeds (and fresh random inputs) for `budget`; stops at the first
/// panic and returns the input that caused it.
pub fn run(
    target: Target,
    seeds: &[Vec<u8>],
    budget: Duration,
    rng_seed: u64,
) -> Result<Report, Crash> {
    let mut rng = Rng(rng_seed | 1);
    let started = Instant::now();
    let mut executions = 0u64;
    let previous_hook = std::panic::take_hook();
    // Each caught panic would print a report otherwise; the crash is returned instead.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = loop {
        if started.elapsed() >= budget {
            break Ok(());
        }
        let mut input = if rng.below(10) == 0 {
            (0..rng.below(256)).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        mutate(&mut rng, &mut input, seeds);
        executions += 1;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| target(&input))) {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            break Err(Crash { input, message });
        }
    };
    std::panic::set_hook(previous_hook);
    outcome.map(|()| Report {
        executions,
        elapsed: started.elapsed(),
    })
}
