//! The console's live dashboard in headless Chromium (`tests/node/dashboard.mjs`): an encoder
//! whose network drops (its process stopped, its RTMP connection open) shows as "No signal"
//! on the operator's page within seconds, long before the connection would time out, and the
//! row goes once it sends again. Screenshot: `target/test-screenshots/console-dashboard-*.png`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The operator token of the test's relay.
const OPERATOR: &str = "district-operator-token-0123";

#[test]
fn a_silent_encoder_shows_as_no_signal_on_the_console() {
    let dir = scratch_dir("dash");
    let (config_path, config) = catalogue_config(
        &dir,
        &format!("[http]\noperator_token = \"{OPERATOR}\"\n[rtmp]\nidle_timeout_ms = 60000\n"),
    );
    let s = Server::start(&config);
    let auth = format!("Bearer {OPERATOR}");
    let now = jiff::Timestamp::now();
    let body = json!({"title": "书法入门", "stream": "shufa", "starts_at": now.to_string(),
        "ends_at": now.checked_add(jiff::SignedDuration::from_secs(3600)).unwrap().to_string()});
    let (code, _, lecture) = send_with(
        "POST",
        &s.url("/api/v1/lectures"),
        Some("application/json"),
        body.to_string().as_bytes(),
        &[("authorization", &auth)],
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&lecture));
    let lecture: Value = serde_json::from_slice(&lecture).unwrap();
    let (_, _, keys) = get_with(
        &s.url("/api/v1/stream-keys/shufa"),
        &[("authorization", &auth)],
    );
    let keys: Value = serde_json::from_slice(&keys).unwrap();
    let key = keys["publish_key"]
        .as_str()
        .expect("publish key")
        .to_string();
    let password = "district-console-pass";
    add_operator(&config_path, "zhang", password);

    let encoder = ffmpeg_publish(&s.rtmp_url(&format!("shufa?key={key}")), "320x180", 25, 440);
    wait_for_segments(&s, "shufa", "video", 1);
    let _browser = browser_lock();
    let pid = encoder.0.id().to_string();
    let id = lecture["id"].to_string();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shots = shots.display().to_string();
    let r = node_in(
        None,
        "dashboard.mjs",
        &[&s.url(""), &id, "zhang", password, &pid, &shots],
        Duration::from_secs(120),
    );
    eprintln!("{r}");
    assert_eq!(r["errors"], json!([]), "{r}");
    assert_eq!(r["console"], json!([]), "{r}");
    // Shown after a second of silence or so (the page polls every 3 s), with the seconds.
    assert!(r["silentAfterMs"].as_u64().unwrap() < 10_000, "{r}");
    assert!(r["silentValue"].as_str().unwrap().ends_with(" s"), "{r}");
    // The encoder's connection was never closed: the same session, sending again.
    assert_eq!(
        s.log().matches("publishing session").count(),
        1,
        "{}",
        s.log()
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
