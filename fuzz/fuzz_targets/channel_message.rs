#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay::channel::fuzz_channel_message(data));
