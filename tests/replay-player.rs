//! Replays in the web player, in Debian's headless Chromium against the real relay: ffmpeg
//! publishes a lecture with three dialects over SRT twice. While the second is live, "watch
//! from the beginning" plays its recording (the EVENT playlist) from the start, well behind
//! live, with a seek bar and a faster speed, and "back to live" returns to the live engine.
//! After it ends, `/play/NAME` lists both replays with their posters; the chosen one plays
//! with hls.js (the dialects as named, tagged audio renditions), switches dialect (the tone
//! heard changes), seeks with the bar, plays at 2×, offers its downloads, and the MP4
//! download itself plays and seeks in a plain `<video>`; `/play/NAME?replay=ID` plays one
//! replay directly. Screenshots go to
//! `target/test-screenshots/`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::replay::*;
use common::*;
use serde_json::{Value, json};

fn node(args: &[&str]) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    let _browser = browser_lock();
    let out = output_within(
        Command::new("node").arg(dir.join("replay.mjs")).args(args),
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "replay.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["errors"], json!([]), "{}: {r}", args[0]);
    r
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn replays_play_in_the_web_player_and_a_live_lecture_can_be_watched_from_the_beginning() {
    let dir = Folder::new("replay-player");
    let s = Server::start(&format!(
        "{}\n[[lecture]]\nname = \"hall\"\ntitle = \"西和讲堂 书法课\"\n",
        recording_config(&dir)
    ));
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shots = shots.to_str().unwrap().to_string();
    let server = format!("http://{}", s.http);

    // The first lecture: 16 s, recorded.
    let mut first = srt_lecture(&s, "hall", THREE, 16);
    assert_eq!(first.wait(Duration::from_secs(40)), Some(true), "ffmpeg");
    let done = wait_recording(&s, "hall", "complete", Duration::from_secs(30));
    let first_id = done["id"].as_str().unwrap().to_string();
    let first_duration = f(&done["duration_s"]);

    // The second, live for a while: watched from the beginning.
    let mut second = srt_lecture(&s, "hall", THREE, 45);
    wait_until(
        Duration::from_secs(40),
        "12 s of the live recording",
        || {
            recordings(&s, "hall")
                .into_iter()
                .find(|r| r["state"] == "recording" && f(&r["duration_s"]) >= 12.0)
        },
    );
    let r = node(&["from-start", &server, "hall", &shots]);
    eprintln!("from-start: {r}");
    assert_eq!(r["live"]["replaying"], Value::Null);
    let from = &r["fromStart"];
    assert_eq!(from["replaying"]["live"], true, "{r}");
    assert_eq!(from["badge"], "Watch from the beginning");
    assert_eq!(
        from["dialects"],
        json!(["普通话", "粤语", "客家话"]),
        "the recording's dialects"
    );
    // From the start of the recording, while live is well past it.
    assert!(f(&from["t"]) < 8.0, "started at {}: {r}", from["t"]);
    assert!(f(&from["duration"]) >= 10.0, "{r}");
    assert!(f(&r["fromStartAdvanced"]) > 1.0, "{r}");
    let langs: Vec<&str> = r["hlsTracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["lang"].as_str().unwrap())
        .collect();
    assert_eq!(langs, ["cmn", "yue", "hak"], "{r}");
    assert_eq!(r["seekBarVisible"], true);
    assert_eq!(r["backLiveVisible"], true);
    assert_eq!(r["liveOnlyHidden"], true, "no raised hand in a replay");
    assert_eq!(f(&r["catchUpRate"]), 1.5);
    assert!(f(&r["catchUp"]) > 3.3, "1.5× over 3 s: {r}");
    assert_eq!(r["backToLive"]["replaying"], Value::Null, "{r}");
    assert!(f(&r["backToLiveAdvanced"]) > 1.0, "{r}");
    assert!(
        ["webrtc", "hls"].contains(&r["backToLive"]["mode"].as_str().unwrap_or("")),
        "{r}"
    );

    assert_eq!(second.wait(Duration::from_secs(60)), Some(true), "ffmpeg");
    wait_until(Duration::from_secs(30), "two complete recordings", || {
        let all = recordings(&s, "hall");
        (all.len() == 2 && all.iter().all(|r| r["state"] == "complete")).then_some(())
    });

    // After the lecture: both replays offered; the first one played.
    let r = node(&["replay", &server, "hall", &shots, &first_id]);
    eprintln!("replay: {r}");
    let items = r["offered"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{r}");
    assert_eq!(items[1]["id"], first_id.as_str(), "newest first");
    assert!(
        items
            .iter()
            .all(|i| i["text"].as_str().unwrap().contains("西和讲堂 书法课"))
    );
    for i in items {
        assert_eq!(
            i["poster"],
            format!("/replay/{}/poster.jpg", i["id"].as_str().unwrap()).as_str()
        );
    }
    assert!(
        r["postersLoaded"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| f(w) == 320.0),
        "{r}"
    );
    let p = &r["playing"];
    assert_eq!(p["replaying"], json!({ "id": first_id, "live": false }));
    assert_eq!(p["badge"], "Replay");
    assert_eq!(
        p["poster"],
        format!("/replay/{first_id}/poster.jpg").as_str()
    );
    assert!((f(&p["duration"]) - first_duration).abs() < 1.5, "{r}");
    assert_eq!(
        r["hlsTracks"],
        json!([
            { "name": "普通话", "lang": "cmn", "default": true },
            { "name": "粤语", "lang": "yue", "default": false },
            { "name": "客家话", "lang": "hak", "default": false },
        ])
    );
    assert!(f(&r["advanced"]) > 1.0, "{r}");
    assert!(
        (f(&r["hzBefore"]) - 440.0).abs() < 10.0,
        "普通话 first: {r}"
    );
    assert!((f(&r["hzAfter"]) - 660.0).abs() < 10.0, "粤语 after: {r}");
    assert_eq!(r["afterSwitch"]["dialect"], "yue");
    for k in ["seek70", "seek15"] {
        let sk = &r[k];
        assert!((f(&sk["at"]) - f(&sk["to"])).abs() < 2.0, "{k}: {r}");
        assert!(f(&sk["moved"]) > 0.5, "{k} plays on: {r}");
    }
    assert!(
        (f(&r["hzAfterSeek"]) - 660.0).abs() < 10.0,
        "the dialect stays across seeks: {r}"
    );
    assert_eq!(f(&r["rate"]), 2.0);
    assert!(f(&r["at2x"]) > 4.5, "2× over 3 s: {r}");
    let downloads: Vec<(String, String)> = r["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["download"], true);
            (
                d["text"].as_str().unwrap().to_string(),
                d["href"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let base = format!("/replay/{first_id}/download.mp4");
    assert_eq!(
        downloads,
        [
            ("All dialects".to_string(), base.clone()),
            ("普通话".into(), format!("{base}?lang=cmn")),
            ("粤语".into(), format!("{base}?lang=yue")),
            ("客家话".into(), format!("{base}?lang=hak")),
        ]
    );
    assert_eq!(r["backListVisible"], true);
    let mp4 = &r["mp4"];
    assert!((f(&mp4["duration"]) - first_duration).abs() < 1.5, "{r}");
    assert_eq!(mp4["size"], json!([320, 180]));
    assert!(
        (f(&mp4["seekedTo"]) - 0.6 * f(&mp4["duration"])).abs() < 2.5,
        "{r}"
    );
    assert!(f(&mp4["moved"]) > 0.5, "the MP4 plays on after a seek: {r}");
    assert_eq!(
        r["linked"]["replaying"],
        json!({ "id": first_id, "live": false }),
        "/play/hall?replay=ID: {r}"
    );
}
