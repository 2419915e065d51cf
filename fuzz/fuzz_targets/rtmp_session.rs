#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ingest::rtmp::fuzz_session(data));
