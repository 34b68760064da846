#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| busway_fuzz::targets::cloudevents_binary(data));
