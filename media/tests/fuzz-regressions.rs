//! Replays every input the FLV/codec-configuration fuzzer ever found: none may panic.

#[test]
fn flv_tag_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/flv_tag");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_file() && e.file_name() != ".gitkeep" {
            eprintln!("replaying {}", e.path().display());
            media::fuzz_flv_tag(&std::fs::read(e.path()).unwrap());
        }
    }
}
