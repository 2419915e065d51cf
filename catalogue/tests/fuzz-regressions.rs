//! Replays every committed input of the playback token and API body fuzz targets (seed
//! corpus and every input the fuzzer ever found) through their harnesses: none may panic.

use media::fuzz_corpus::replay;

#[test]
fn playback_token_corpus_and_regressions() {
    replay("playback_token", catalogue::admission::fuzz_token);
}

#[test]
fn api_json_corpus_and_regressions() {
    replay("api_json", catalogue::fuzz::fuzz_api);
}
