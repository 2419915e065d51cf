//! Ask back (1 + X roll call) in headless Chromium with fake camera and microphone: a school
//! classroom's player raises its hand, the console accepts it, the class speaks (WHIP), the
//! operator sees and hears it (WHEP preview), broadcasts it to everyone (a plain viewer gets
//! the class's picture and sound, the lecture's HLS a discontinuity), takes it off air (the
//! hall again), broadcasts again and ends it. Nothing from the class reaches viewers before
//! the broadcast. Screenshots go to `target/test-screenshots/ask-*.png`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn post(s: &Server, path: &str, body: &Value) -> Value {
    let auth = format!("Bearer {OPERATOR}");
    let (st, _, b) = send_with(
        "POST",
        &s.url(path),
        Some("application/json"),
        body.to_string().as_bytes(),
        &[("authorization", &auth)],
    );
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    assert!(st == 201 || st == 200, "POST {path}: {st} {v}");
    v
}

/// The operator token of the test's relay.
const OPERATOR: &str = "district-operator-token-0123";

/// `GET` with `key` as the operator's bearer token.
fn operator_get(url: &str, key: &str) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let (code, _, body) = get_with(url, &[("authorization", &auth)]);
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn a_class_asks_back_is_previewed_broadcast_and_ended() {
    let dir = scratch_dir("ask");
    let (config_path, config) = catalogue_config(
        &dir,
        &format!(
            "[http]\noperator_token = \"{OPERATOR}\"\n\
             [ladder]\nenabled = true\nrungs = [{{ width = 320, height = 180, kbps = 200 }}]\n\
             [[site]]\ncode = \"shimen\"\nname = \"石门小学\"\ntown = \"西和\"\nkind = \"school\"\n"
        ),
    );
    let s = Server::start(&config);
    let now = jiff::Timestamp::now();
    let lecture = post(
        &s,
        "/api/v1/lectures",
        &json!({"title": "防诈骗知识", "stream": "askback",
                "starts_at": now.to_string(),
                "ends_at": now.checked_add(jiff::SignedDuration::from_secs(3600)).unwrap().to_string()}),
    );
    let (_, keys) = operator_get(&s.url("/api/v1/stream-keys/askback"), OPERATOR);
    let key = keys["publish_key"].as_str().unwrap().to_string();
    let password = "district-console-pass";
    add_operator(&config_path, "zhang", password);

    // The hall: a 16:9 picture and a 440 Hz tone.
    let _hall = ffmpeg_publish(
        &s.rtmp_url(&format!("askback?key={key}")),
        "640x360",
        25,
        440,
    );
    wait_until(Duration::from_secs(20), "the lecture live", || {
        let (code, _, body) = send("GET", &s.url("/api/v1/streams/askback"), None, b"");
        (code == 200 && String::from_utf8_lossy(&body).contains("\"live\"")).then_some(())
    });
    // The API refuses the asks to anyone without the operator's credential.
    let (code, _) = operator_get(&s.url("/api/v1/streams/askback/asks"), "wrong-key");
    assert_eq!(code, 401);

    let _browser = browser_lock();
    let shots = screenshot_dir();
    let node = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/ask.mjs");
    let video_playlist = s.url("/hls/askback/video/index.m3u8");
    let (r, quiet, on_air) = std::thread::scope(|scope| {
        let driver = scope.spawn(|| {
            output_within(
                Command::new("node")
                    .arg(&node)
                    .env("ASK_SERVER", s.url(""))
                    .env("ASK_STREAM", "askback")
                    .env("ASK_SITE", "shimen")
                    .env("ASK_LECTURE", lecture["id"].to_string())
                    .env("ASK_OPERATOR", "zhang")
                    .env("ASK_PASSWORD", password)
                    .env("ASK_SHOTS", &shots)
                    .env("ASK_TIMEOUT_S", "40"),
                Duration::from_secs(400),
            )
        });
        // Watched from outside: while the class is connected but not broadcast, the
        // lecture's picture has no discontinuity; once on air, it has one.
        let state = |want: &str| {
            let (_, v) = operator_get(&s.url("/api/v1/streams/askback/asks"), OPERATOR);
            v["asks"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["state"] == want).cloned())
        };
        let connected = wait_until(Duration::from_secs(200), "the class connected", || {
            state("connected")
        });
        let quiet = get_text(&video_playlist);
        // The class's media is nowhere a viewer could find it.
        let feed = format!("askback.ask{}", connected["id"]);
        assert_eq!(get(&s.url(&format!("/hls/{feed}/index.m3u8"))).0, 404);
        assert!(!get_text(&s.url("/api/v1/streams")).contains(&feed));
        let start = Instant::now();
        let on_air = wait_until(Duration::from_secs(200), "the class on air", || {
            state("on_air")
        });
        let mut with_break = String::new();
        while start.elapsed() < Duration::from_secs(220) {
            with_break = get_text(&video_playlist);
            if with_break.contains("#EXT-X-DISCONTINUITY") {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        // The smaller picture goes on with the class's picture: no gaps while it is on air.
        std::thread::sleep(Duration::from_secs(3));
        let rung = get_text(&s.url("/hls/askback/video-180p/index.m3u8"));
        let out = driver.join().unwrap();
        (out, (connected, quiet), (on_air, with_break, rung))
    });
    let stdout = String::from_utf8_lossy(&r.stdout);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "ask.mjs: {stderr}");
    let r: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("ask.mjs: no JSON ({e}): {stdout} {stderr}"));
    assert_eq!(r["errors"], json!([]), "{r}");
    let steps = &r["steps"];

    // Raised and accepted: the class alone was invited, and named by its site.
    assert_eq!(steps["accept"]["player"]["askState"], "invited", "{r}");
    assert_eq!(quiet.0["from"], "石门小学", "{}", quiet.0);
    assert!(
        !quiet.1.contains("#EXT-X-DISCONTINUITY"),
        "the class reached viewers before it was broadcast: {}",
        quiet.1
    );
    // The operator saw and heard it.
    let preview = &steps["preview"];
    assert!(preview["width"].as_u64().unwrap() > 0, "{preview}");
    assert_eq!(preview["advancing"], true, "{preview}");
    assert!(
        preview["audio"]["rmsMax"].as_f64().unwrap() > 0.05,
        "the class was not heard: {preview}"
    );
    // On air: the viewer got the class's 4:3 picture instead of the hall's 16:9, and the
    // lecture's HLS changed configuration after a discontinuity.
    let lecture_size = &steps["hand"]["lectureSize"];
    assert_eq!(lecture_size["width"], 640, "{r}");
    let b = &steps["broadcast"];
    assert_eq!(b["player"]["askState"], "on_air", "{b}");
    let (w, h) = (
        b["viewer"]["width"].as_u64().unwrap(),
        b["viewer"]["height"].as_u64().unwrap(),
    );
    assert!(
        w > 0 && w * 3 == h * 4,
        "the viewer did not get the class's picture: {b}"
    );
    assert_eq!(b["viewer"]["advancing"], true, "{b}");
    assert_eq!(on_air.0["id"], quiet.0["id"]);
    assert!(
        on_air.1.contains("#EXT-X-DISCONTINUITY"),
        "no discontinuity in the lecture's picture: {}",
        on_air.1
    );
    assert!(
        on_air.1.matches("#EXT-X-MAP").count() >= 2,
        "the class's configuration was not announced: {}",
        on_air.1
    );
    assert!(
        on_air.2.contains("#EXT-X-DISCONTINUITY") && !on_air.2.contains("GAP"),
        "the smaller picture did not follow the class on air: {}",
        on_air.2
    );
    // The class's sound replaced the hall's tone for viewers: its beeps, and silence
    // between them where the tone was.
    let sound = &b["viewerSound"];
    let level = |when: &str, what: &str| sound[when][what].as_f64().unwrap();
    assert!(
        level("during", "rmsMax") > 2.0 * level("before", "rmsMax"),
        "the class was not heard by viewers: {sound}"
    );
    assert!(
        level("during", "rmsMin") < 0.5 * level("before", "rmsMin"),
        "the hall's tone went on during the broadcast: {sound}"
    );
    assert!(
        steps["off_air"]["viewerSound"]["rmsMin"].as_f64().unwrap()
            > 0.5 * level("before", "rmsMin"),
        "the hall's tone did not come back: {r}"
    );
    // Off air: the hall again.
    let off = &steps["off_air"];
    assert_eq!(off["player"]["askState"], "publishing", "{off}");
    assert_eq!(off["viewer"]["width"], 640, "{off}");
    assert_eq!(
        steps["broadcast_again"]["player"]["askState"], "on_air",
        "{r}"
    );
    // Ended while on air: the class's link is closed and the hall is back.
    let end = &steps["end"];
    assert_eq!(end["player"]["askState"], "ended", "{end}");
    assert_eq!(end["viewer"]["width"], 640, "{end}");
    let (_, v) = operator_get(&s.url("/api/v1/streams/askback/asks"), OPERATOR);
    assert_eq!(v["asks"][0]["state"], "ended", "{v}");
    assert_eq!(v["on_air"], Value::Null, "{v}");
    let log = s.log();
    assert!(log.contains("ask back: class on air"), "{log}");
    assert!(
        log.contains("ask back ended: ended by the operator"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
