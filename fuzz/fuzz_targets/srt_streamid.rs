#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ingest::srt::fuzz_streamid(data));
