#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| media::fuzz_edge_pull(data));
