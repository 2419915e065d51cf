//! Replays every committed input of the media fuzz targets (seed corpora and every input the
//! fuzzers ever found) through their harnesses: none may panic.

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

/// Every committed input of `target`: its seed corpus (`fuzz/corpus-seeds/`) and every input
/// a fuzzer ever found (`fuzz/regressions/`).
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for kind in ["corpus-seeds", "regressions"] {
        for e in std::fs::read_dir(root.join(kind).join(target))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_file() && e.file_name() != ".gitkeep" {
                out.push((
                    e.path().display().to_string(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    out
}

fn replay(target: &str, harness: fn(&[u8])) {
    let all = inputs(target);
    assert!(!all.is_empty(), "no committed inputs for {target}");
    for (name, data) in all {
        eprintln!("replaying {name}");
        harness(&data);
    }
}
