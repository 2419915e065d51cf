//! The committed fuzz inputs (`fuzz/corpus-seeds/TARGET/` and `fuzz/regressions/TARGET/`),
//! for each crate's `tests/fuzz-regressions.rs` to replay on stable Rust.

use std::path::Path;

/// Every committed input of `target`: its seed corpus and every input a fuzzer ever found,
/// as (path, bytes).
pub fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for kind in ["corpus-seeds", "regressions"] {
        for e in std::fs::read_dir(root.join(kind).join(target))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_file()
                && e.file_name() != ".gitkeep"
                && let Ok(data) = std::fs::read(e.path())
            {
                out.push((e.path().display().to_string(), data));
            }
        }
    }
    out
}

/// Runs `harness` on every committed input of `target`; panics if there are none.
pub fn replay(target: &str, harness: fn(&[u8])) {
    let all = inputs(target);
    assert!(!all.is_empty(), "no committed inputs for {target}");
    for (name, data) in all {
        eprintln!("replaying {name}");
        harness(&data);
    }
}
