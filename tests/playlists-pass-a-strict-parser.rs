//! Every playlist the relay serves passes a strict third-party parser (the `hls-parser` npm
//! package in strict mode, which checks RFC 8216bis's rules: part durations against
//! PART-TARGET and its 85 % floor, PART-HOLD-BACK, parts only near the end of the playlist).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn the_demo_lectures_playlists_pass_hls_parser_in_strict_mode() {
    let s = Server::start(
        "[demo]\nenabled = true\nwidth = 320\nheight = 180\nfps = 25\nkeyframe_interval = 50\nvideo_kbps = 300\n",
    );
    wait_for_segments(&s, "demo", "video", 1);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/hls-parser").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    // Long enough for the window to fill and slide: parts leave the playlist as it grows.
    let out = output_within(
        Command::new("node")
            .arg(dir.join("hls-strict.mjs"))
            .args([&s.url("/hls/demo/index.m3u8"), "14"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["renditions"], 4, "{r}");
    assert!(r["checked"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(r["errors"], serde_json::json!([]), "{r:#}");
}
