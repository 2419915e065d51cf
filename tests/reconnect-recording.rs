//! A publisher that drops and comes back within the reconnect window, on each input (RTMP
//! and SRT from ffmpeg, WHIP from Chromium): the lecture is one recording (the recorder's
//! documented behaviour: a reconnect continues the same recording, marked with one
//! discontinuity), which ffmpeg decodes from start to end without an error.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::replay::{Folder, recordings};
use common::*;
use serde_json::Value;

/// Records into `dir`; a publisher back within `grace` seconds continues the lecture.
fn config(dir: &Folder, grace: u32, extra: &str) -> String {
    format!(
        "[lectures]\ngrace_period_s = {grace}\n{extra}\n[recording]\nenabled = true\ndir = \"{}\"\nmin_free_mb = 0\n",
        dir.0.display()
    )
}

/// The lecture's only recording once complete; checks its discontinuities and decodes it.
fn one_recording_plays_through(s: &Server, lecture: &str, renditions: &[&str]) -> Value {
    let rec = wait_until(Duration::from_secs(60), "the recording complete", || {
        let r = recordings(s, lecture);
        assert!(r.len() <= 1, "one recording per lecture: {r:?}");
        r.into_iter().next().filter(|r| r["state"] == "complete")
    });
    let id = rec["id"].as_str().unwrap();
    for rendition in renditions {
        let vod = get_text(&s.url(&format!("/replay/{id}/{rendition}/index.m3u8")));
        let n = vod.lines().filter(|l| *l == "#EXT-X-DISCONTINUITY").count();
        assert_eq!(n, 1, "{rendition}: {vod}");
        assert!(vod.ends_with("#EXT-X-ENDLIST\n"), "{vod}");
    }
    let out = output_within(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(s.url(&format!("/replay/{id}/index.m3u8")))
            // Browsers' frames come at uneven times: keep the recorded timestamps.
            .args(["-map", "0", "-enc_time_base:v", "-1", "-f", "null", "-"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rec
}

#[test]
fn rtmp_publisher_back_within_the_window_is_one_recording_that_plays_through() {
    let dir = Folder::new("reconnect-rtmp");
    let s = Server::start(&config(&dir, 4, ""));
    for _ in 0..2 {
        let mut p = ffmpeg_publish_args(&s.rtmp_url("again"), "320x180", 25, 440, &["-t", "5"]);
        assert_eq!(
            p.wait(Duration::from_secs(20)),
            Some(true),
            "ffmpeg published"
        );
    }
    let rec = one_recording_plays_through(&s, "again", &["video", "audio-cmn"]);
    assert!(rec["duration_s"].as_f64().unwrap() > 8.0, "{rec}");
}

#[test]
fn srt_publisher_back_within_the_window_is_one_recording_that_plays_through() {
    let dir = Folder::new("reconnect-srt");
    let s = Server::start(&config(&dir, 4, ""));
    for _ in 0..2 {
        let mut p = common::replay::srt_lecture(&s, "again", &[("cmn", 440), ("yue", 660)], 5);
        assert_eq!(
            p.wait(Duration::from_secs(20)),
            Some(true),
            "ffmpeg published"
        );
    }
    let rec = one_recording_plays_through(&s, "again", &["video", "audio-cmn", "audio-yue"]);
    assert!(rec["duration_s"].as_f64().unwrap() > 8.0, "{rec}");
}

#[test]
fn whip_publisher_back_within_the_window_is_one_recording_that_plays_through() {
    let dir = Folder::new("reconnect-whip");
    // A browser takes a few seconds to start: a longer window.
    let s = Server::start(&config(
        &dir,
        10,
        "[[lecture]]\nname = \"again\"\npublish_key = \"hall-key-123\"\n",
    ));
    let _browser = browser_lock();
    let node = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        node.join("node_modules/playwright-core").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    for _ in 0..2 {
        // Publishes 6 s, then ends its session (DELETE): the lecture waits for it.
        let out = output_within(
            Command::new("node").arg(node.join("whip.mjs")).args([
                "publish",
                &format!("http://{}", s.http),
                "again",
                "hall-key-123",
                "6",
            ]),
            Duration::from_secs(60),
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(r["state"], "connected", "{r}");
        assert_eq!(r["deleteStatus"], 200, "{r}");
    }
    let rec = one_recording_plays_through(&s, "again", &["video", "audio-cmn"]);
    assert!(rec["duration_s"].as_f64().unwrap() > 8.0, "{rec}");
}
