#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| busway_rabbitmq::fuzzing::decode_delivery(data));
