//! Replays every committed input of the playback token and API body fuzz targets (seed
//! corpus and every input the fuzzer ever found) through their harnesses: none may panic.

#[test]
fn playback_token_corpus_and_regressions() {
    replay("playback_token", catalogue::admission::fuzz_token);
}

#[test]
fn api_json_corpus_and_regressions() {
    replay("api_json", catalogue::fuzz::fuzz_api);
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
