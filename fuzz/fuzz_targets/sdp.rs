#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::whep::fuzz_sdp(data));
