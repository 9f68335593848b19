#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| whepcast::fuzz::whip_message(data));
