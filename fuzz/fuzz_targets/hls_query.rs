#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::http::fuzz_hls_query(data));
