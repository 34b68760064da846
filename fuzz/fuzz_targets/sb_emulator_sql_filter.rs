#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| busway_sb_emulator::fuzzing::sql_filter(data));
