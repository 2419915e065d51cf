#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| catalogue::admission::fuzz_token(data));
