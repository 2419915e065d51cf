//! hls.js in Debian's headless Chromium, inside the web player forced to LL-HLS
//! (`/play/NAME?mode=hls`), sees the dialects as named audio renditions with languages,
//! runs in low-latency mode, switches dialect (the heard tone changes), and rides out a
//! publisher restart by itself. Screenshots go to `target/test-screenshots/`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn node(script: &str, args: &[&str], timeout: Duration) -> serde_json::Value {
    let _browser = browser_lock();
    node_unlocked(script, args, timeout)
}

/// For a caller already holding [`browser_lock`].
fn node_unlocked(script: &str, args: &[&str], timeout: Duration) -> serde_json::Value {
    node_in(None, script, args, timeout)
}

#[test]
fn hlsjs_plays_the_demo_and_switches_dialect() {
    let s = Server::start(
        "[demo]\nenabled = true\nwidth = 320\nheight = 180\nfps = 25\nkeyframe_interval = 50\nvideo_kbps = 400\n",
    );
    wait_for_segments(&s, "demo", "video", 2);
    let shots = screenshots();
    let r = node(
        "hls-play.mjs",
        &[
            &s.url("/play/demo?mode=hls"),
            shots.to_str().unwrap(),
            "yue",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["mode"], "hls");
    eprintln!("hls.js latency estimate: {} s", r["latency"]);
    assert!(
        r["advanced"].as_f64().unwrap() > 1.0,
        "video does not advance: {r}"
    );
    assert_eq!(r["picker"], serde_json::json!(["普通话", "粤语", "客家话"]));
    let langs: Vec<_> = r["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["lang"].as_str().unwrap())
        .collect();
    assert_eq!(langs, ["cmn", "yue", "hak"]);
    assert_eq!(r["lowLatency"], true);
    let before = r["hzBefore"].as_f64().unwrap();
    let after = r["hzAfter"].as_f64().unwrap();
    assert!(
        (before - 440.0).abs() < 10.0,
        "普通话 should sound at 440 Hz, heard {before}"
    );
    assert!(
        (after - 660.0).abs() < 10.0,
        "粤语 should sound at 660 Hz, heard {after}"
    );
    assert_eq!(r["state"], "playing");
}

#[test]
fn hlsjs_resumes_by_itself_after_a_publisher_restart() {
    let s = Server::start("[lectures]\ngrace_period_s = 30\n");
    let url = s.rtmp_url("rejoin");
    let mut publisher = ffmpeg_publish(&url, "320x180", 25, 440);
    wait_for_segments(&s, "rejoin", "video", 2);
    let shots = screenshots();
    let page = s.url("/play/rejoin?mode=hls");
    let shots_arg = shots.to_str().unwrap().to_string();
    // Hold the browser for the watcher from here, so the restart below happens while it
    // watches rather than while it waits for another test's browser.
    let _browser = browser_lock();
    let watcher = std::thread::spawn(move || {
        node_unlocked(
            "hls-watch.mjs",
            &[&page, "30", &shots_arg],
            Duration::from_secs(90),
        )
    });
    std::thread::sleep(Duration::from_secs(8));
    publisher.stop();
    std::thread::sleep(Duration::from_secs(4));
    let _again = ffmpeg_publish(&url, "320x180", 25, 440);
    let r = watcher.join().unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let samples = r["samples"].as_array().unwrap();
    let t = |s: &serde_json::Value| s["t"].as_f64().unwrap();
    let before = samples.iter().map(t).fold(0.0, f64::max);
    let last = t(samples.last().unwrap());
    // Played before the restart, and well beyond it afterwards, in the same page.
    assert!(before > 3.0, "{r}");
    let played_after = samples
        .windows(2)
        .filter(|w| t(&w[1]) > t(&w[0]) + 0.1)
        .count();
    assert!(played_after > 20, "too few advancing samples: {r}");
    assert!(
        last > 15.0,
        "playback did not resume: last currentTime {last}: {r}"
    );
    // The viewer was told why the picture stopped, and the player came back by itself in
    // the same mode.
    let states: Vec<&str> = samples
        .iter()
        .map(|x| x["state"].as_str().unwrap())
        .collect();
    let gap = states
        .iter()
        .position(|s| *s == "reconnecting")
        .unwrap_or_else(|| panic!("never showed reconnecting: {r}"));
    assert!(states[gap..].contains(&"playing"), "{states:?}");
    assert_eq!(*states.last().unwrap(), "playing", "{states:?}");
    assert!(
        samples
            .iter()
            .all(|x| x["mode"] == "hls" || x["mode"].is_null()),
        "{r}"
    );
    eprintln!("player errors during the restart: {}", r["playbackErrors"]);
}
