//! # busway-fuzz
//!
//! One function per decoder that reads bytes a broker or a peer controls, each taking raw fuzz
//! input and checking invariants beyond "does not panic" where there are some (a decoded message
//! is valid; encoding what was decoded and decoding it again gives the same message). Two
//! engines run them:
//!
//! - `fuzz/` at the workspace root: cargo-fuzz (libFuzzer), for long runs
//!   (`cargo fuzz run <target>`);
//! - [`bounded`]: a small mutation fuzzer on the stable toolchain, which `scripts/test` runs for
//!   a bounded time on every target (`tests/bounded.rs`).

pub mod bounded;
pub mod targets;

/// A fuzz target: raw input in, panic on a violated invariant.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `fuzz/fuzz_targets/*.rs`).
pub const TARGETS: &[(&str, Target)] = &[
    ("cloudevents_binary", targets::cloudevents_binary),
    ("cloudevents_structured", targets::cloudevents_structured),
    ("confluent_wire", targets::confluent_wire),
    ("kafka_record", busway_kafka::fuzzing::decode_record),
    (
        "rabbitmq_delivery",
        busway_rabbitmq::fuzzing::decode_delivery,
    ),
    (
        "servicebus_binary",
        busway_servicebus::fuzzing::decode_binary,
    ),
    (
        "servicebus_structured",
        busway_servicebus::fuzzing::decode_structured,
    ),
    (
        "sb_emulator_wire_inbound",
        busway_sb_emulator::fuzzing::wire_inbound,
    ),
    (
        "sb_emulator_wire_outbound",
        busway_sb_emulator::fuzzing::wire_outbound,
    ),
    (
        "sb_emulator_sql_filter",
        busway_sb_emulator::fuzzing::sql_filter,
    ),
];

/// Seeds a target starts from besides `fuzz/corpus/<target>/`: well-formed inputs of its format.
pub fn builtin_seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "sb_emulator_wire_inbound" | "sb_emulator_wire_outbound" => {
            busway_sb_emulator::fuzzing::inbound_seeds()
        }
        "sb_emulator_sql_filter" => busway_sb_emulator::fuzzing::sql_seeds()
            .into_iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        _ => vec![
            STRUCTURED.to_vec(),
            STRUCTURED_BASE64.to_vec(),
            FRAME.to_vec(),
            Vec::new(),
            vec![0],
        ],
    }
}

const STRUCTURED: &[u8] = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"2024-01-01T00:00:00Z","datacontenttype":"application/json","data":{"n":[1,2.5,null]},"tenant":"acme"}"#;
const STRUCTURED_BASE64: &[u8] =
    br#"{"specversion":"1.0","id":"2","source":"/s","type":"t","data_base64":"3q2+7w=="}"#;
const FRAME: &[u8] = b"\x00\x00\x00\x00\x07\x02\x02\x04payload";
