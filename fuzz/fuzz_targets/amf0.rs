#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ingest::rtmp::amf0::decode_all(data);
});
