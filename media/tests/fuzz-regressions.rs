//! Replays every committed input of the media fuzz targets (seed corpora and every input the
//! fuzzers ever found) through their harnesses: none may panic.

use media::fuzz_corpus::{inputs, replay};

#[test]
fn flv_tag_regressions() {
    for (name, data) in inputs("flv_tag") {
        eprintln!("replaying {name}");
        media::fuzz_flv_tag(&data);
    }
}

#[test]
fn config_records_corpus_and_regressions() {
    replay("config_records", media::fuzz_config_records);
}

#[test]
fn mpegts_corpus_regressions_and_fixture() {
    replay("mpegts", media::fuzz_mpegts);
    let ts = include_bytes!("../testdata/three-dialects.ts");
    for piece in [0u8, 1, 14, 255] {
        let mut data = vec![piece];
        data.extend_from_slice(ts);
        media::fuzz_mpegts(&data);
    }
}

#[test]
fn fmp4_fragment_corpus_and_regressions() {
    replay("fmp4_fragment", media::fuzz_fmp4_fragment);
}

#[test]
fn edge_pull_corpus_and_regressions() {
    replay("edge_pull", media::fuzz_edge_pull);
}
