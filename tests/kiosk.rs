//! A village hall's screen: `/play/NAME?kiosk=1&site=CODE&lang=hak` in headless Chromium,
//! never clicked. Before the lecture it shows the programme's title and a countdown; it
//! starts by itself with sound when the hall goes live; between lectures it shows the next
//! one; when the hall streams again it plays again by itself; it is on the main hall's
//! roster all along. Screenshots go to `target/test-screenshots/kiosk-*.png`.

mod common;

use std::time::Duration;

use common::*;

fn json_post(url: &str, body: serde_json::Value) -> serde_json::Value {
    let (code, _, b) = send(
        "POST",
        url,
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    assert_eq!(code, 201, "{url}: {}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn a_kiosk_starts_by_itself_shows_the_next_lecture_and_plays_again() {
    let s = Server::start(
        "[lectures]\ngrace_period_s = 2\n\
         [[site]]\ncode = \"shimen\"\nname = \"石门村\"\ntown = \"西和\"\nkind = \"village_station\"\ndialect = \"hak\"\n",
    );
    let hall = json_post(
        &s.url("/api/v1/halls"),
        serde_json::json!({"name": "西和讲堂", "town": "西和"}),
    );
    let now = jiff::Timestamp::now();
    let at = |secs: i64| {
        now.checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap()
            .to_string()
    };
    json_post(
        &s.url("/api/v1/lectures"),
        serde_json::json!({"title": "书法课", "stream": "kiosk", "hall_id": hall["id"],
                           "starts_at": at(20), "ends_at": at(600)}),
    );
    json_post(
        &s.url("/api/v1/lectures"),
        serde_json::json!({"title": "象棋课", "stream": "kiosk", "hall_id": hall["id"],
                           "starts_at": at(3 * 86_400), "ends_at": at(3 * 86_400 + 3600)}),
    );
    let key: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/stream-keys/kiosk"))).unwrap();
    let url = s.rtmp_url(&format!(
        "kiosk?key={}&lang=hak",
        key["publish_key"].as_str().unwrap()
    ));

    let shots = screenshot_dir();
    let page = s.url("/play/kiosk?kiosk=1&site=shimen&lang=hak");
    let _browser = browser_lock();
    let (r, on_roster) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            node_in(
                None,
                "kiosk.mjs",
                &[&page, "50", &shots],
                Duration::from_secs(120),
            )
        });
        // The hall goes live a little after the page opened; stops; then streams again.
        std::thread::sleep(Duration::from_secs(8));
        let mut first = ffmpeg_publish(&url, "320x180", 25, 880);
        let roster = wait_until(Duration::from_secs(20), "the screen on the roster", || {
            let v: serde_json::Value =
                serde_json::from_str(&get_text(&s.url("/api/v1/streams/kiosk/sites"))).ok()?;
            let site = v["sites"]
                .as_array()?
                .iter()
                .find(|x| x["code"] == "shimen")?
                .clone();
            (site["status"] == "connected" && site["dialects"]["hak"] == 1).then_some(site)
        });
        std::thread::sleep(Duration::from_secs(10));
        first.stop();
        std::thread::sleep(Duration::from_secs(14));
        let _again = ffmpeg_publish(&url, "320x180", 25, 880);
        (watcher.join().unwrap(), roster)
    });
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let samples = r["samples"].as_array().unwrap();
    let at_wall = |from: f64, to: f64| {
        samples
            .iter()
            .filter(move |x| (from..to).contains(&x["wall"].as_f64().unwrap()))
    };
    // Never a control on screen, always the whole window.
    assert!(
        samples.iter().all(|x| x["controls"] == false),
        "a control was visible: {r}"
    );
    assert!(
        samples.iter().all(|x| x["fills"] == true),
        "not full window: {r}"
    );
    // Before: the programme's title and a countdown.
    let before = at_wall(1.0, 7.0)
        .next_back()
        .expect("samples before the start")
        .clone();
    let sub = before["sub"].as_str().unwrap();
    assert!(
        sub.contains("书法课") && sub.contains("距开始还有"),
        "{before}"
    );
    // Live: it played by itself, with sound.
    let live: Vec<_> = at_wall(10.0, 26.0)
        .filter(|x| x["state"] == "playing")
        .collect();
    assert!(live.len() >= 6, "did not start by itself: {r}");
    assert!(
        live.iter()
            .all(|x| x["muted"] == false && x["paused"] == false),
        "{r}"
    );
    // Between lectures: the next one, days away.
    let between = samples
        .iter()
        .find(|x| x["sub"].as_str().is_some_and(|t| t.contains("象棋课")))
        .unwrap_or_else(|| panic!("the next lecture was never shown: {r}"));
    assert!(between["sub"].as_str().unwrap().contains('天'), "{between}");
    // Streaming again: playing again, untouched.
    let last: Vec<_> = samples.iter().rev().take(6).collect();
    assert!(
        last.iter().all(|x| x["state"] == "playing"),
        "did not play again: {r}"
    );
    assert!(
        last.windows(2)
            .all(|w| w[0]["t"].as_f64() > w[1]["t"].as_f64()),
        "not advancing at the end: {r}"
    );
    assert_eq!(on_roster["name"], "石门村");
    assert_eq!(on_roster["via"], "player");
}
