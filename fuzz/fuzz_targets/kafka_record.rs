#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| busway_kafka::fuzzing::decode_record(data));
