#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| busway_sb_emulator::fuzzing::wire_inbound(data));
