#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| recorder::fuzz_recovery(data));
