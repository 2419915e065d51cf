#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| media::fuzz_config_records(data));
