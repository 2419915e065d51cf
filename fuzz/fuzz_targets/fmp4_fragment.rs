#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| media::fuzz_fmp4_fragment(data));
