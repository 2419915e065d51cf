//! Replays every committed input of the relay's fuzz targets (seed corpora and every input
//! the fuzzers ever found) through their harnesses: none may panic.

use media::fuzz_corpus::replay;

#[test]
fn sdp_corpus_and_regressions() {
    replay("sdp", relay::whep::fuzz_sdp);
}

#[test]
fn hls_query_corpus_and_regressions() {
    replay("hls_query", relay::http::fuzz_hls_query);
}

#[test]
fn channel_message_corpus_and_regressions() {
    replay("channel_message", relay::channel::fuzz_channel_message);
}
