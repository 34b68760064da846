//! cargo-fuzz target: `busway_sb_emulator::fuzzing::sql_filter` must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    busway_sb_emulator::fuzzing::sql_filter(data);
});
