//! Replays every input the fuzzers ever found (fuzz/regressions/) and the captured sessions
//! through the fuzzing harnesses: none may panic.

use media::fuzz_corpus::inputs;

#[test]
fn rtmp_session_regressions_and_captures() {
    for (name, data) in inputs("rtmp_session") {
        eprintln!("replaying {name}");
        ingest::rtmp::fuzz_session(&data);
    }
    for capture in [
        &include_bytes!("../src/rtmp/testdata/ffmpeg-5.1-publish.bin")[..],
        &include_bytes!("../src/rtmp/testdata/gst-1.22-rtmp2sink-publish.bin")[..],
        &include_bytes!("../src/rtmp/testdata/obs-29.0.2-publish.bin")[..],
    ] {
        // The harness supplies its own handshake: skip the capture's.
        for piece in [0u8, 7, 63] {
            let mut data = vec![piece];
            data.extend_from_slice(&capture[3073..]);
            ingest::rtmp::fuzz_session(&data);
        }
    }
}

#[test]
fn amf0_regressions() {
    for (name, data) in inputs("amf0") {
        eprintln!("replaying {name}");
        let _ = ingest::rtmp::amf0::decode_all(&data);
    }
}

#[test]
fn srt_ts_regressions_and_fixture() {
    for (name, data) in inputs("srt_ts") {
        eprintln!("replaying {name}");
        ingest::srt::fuzz_ts(&data);
    }
    let ts = include_bytes!("../../media/testdata/three-dialects.ts");
    for piece in [0u8, 1, 187, 255] {
        let mut data = vec![piece];
        data.extend_from_slice(ts);
        ingest::srt::fuzz_ts(&data);
    }
}

#[test]
fn srt_streamid_corpus_and_regressions() {
    let all = inputs("srt_streamid");
    assert!(!all.is_empty(), "no committed inputs for srt_streamid");
    for (name, data) in all {
        eprintln!("replaying {name}");
        ingest::srt::fuzz_streamid(&data);
    }
}
