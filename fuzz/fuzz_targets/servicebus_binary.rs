#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| busway_servicebus::fuzzing::decode_binary(data));
