#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| catalogue::fuzz::fuzz_api(data));
