//! The embeddable web player in Debian's headless Chromium against the real relay: WebRTC
//! first, LL-HLS when WebRTC is missing or refused, audio only, dialect switching heard in
//! every mode, reconnecting by itself after a publisher restart, embedding from another
//! origin (iframe and custom element), lecture states with screenshots, titles rendered as
//! text, the remembered dialect, and the live channel's hand and question. In Debian's
//! Firefox ESR (no H.264 over WebRTC without its OpenH264 plugin): the picture over LL-HLS at
//! once with the reason shown, or the sound alone over WebRTC when WebRTC is asked for.
//! Screenshots go to `target/test-screenshots/`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const DEMO: &str = "[demo]\nenabled = true\nwidth = 320\nheight = 180\nfps = 25\nkeyframe_interval = 50\nvideo_kbps = 400\n";

fn player(scenario: &str, s: &Server, stream: &str, seconds: u32) -> Value {
    player_in(None, scenario, s, stream, seconds)
}

fn player_in(
    netns: Option<&Netns>,
    scenario: &str,
    s: &Server,
    stream: &str,
    seconds: u32,
) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let _browser = browser_lock();
    let mut node = match netns {
        Some(ns) => ns.command("node"),
        None => Command::new("node"),
    };
    let out = output_within(
        node.arg(dir.join("player.mjs")).args([
            scenario,
            &format!("http://{}", s.http),
            stream,
            shots.to_str().unwrap(),
            &seconds.to_string(),
        ]),
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "player.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["errors"], serde_json::json!([]), "{scenario}: {r}");
    r
}

fn hz(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// When the player first reported "playing", ms after navigation started.
fn time_to_playing(r: &Value) -> Option<f64> {
    r["events"].as_array()?.iter().find_map(|e| {
        (e["name"] == "statechange" && e["detail"]["state"] == "playing")
            .then(|| e["at"].as_f64())
            .flatten()
    })
}

fn check_dialect_switch(r: &Value, to_hz: f64) {
    eprintln!("dialect switch: the new tone after {} ms", r["switchMs"]);
    assert!(
        (hz(&r["before"]) - 440.0).abs() < 10.0,
        "普通话 first: {}",
        r["before"]
    );
    assert!(
        (hz(&r["after"]) - to_hz).abs() < 10.0,
        "switched tone: {}",
        r["after"]
    );
}

#[test]
fn plays_over_webrtc_first_and_switches_dialect() {
    let s = Server::start(DEMO);
    wait_for_segments(&s, "demo", "video", 1);
    let r = player("play", &s, "demo", 0);
    eprintln!(
        "WebRTC: playing {:?} ms after navigation",
        time_to_playing(&r)
    );
    assert_eq!(r["player"]["mode"], "webrtc");
    assert_eq!(
        r["player"]["dialects"],
        serde_json::json!(["普通话", "粤语", "客家话"])
    );
    assert!(
        r["advanced"].as_f64().unwrap() > 1.0,
        "video did not advance: {r}"
    );
    check_dialect_switch(&r, 660.0);
    assert_eq!(r["afterSwitch"]["dialect"], "yue");
    assert_eq!(
        r["afterSwitch"]["mode"], "webrtc",
        "a dialect switch needs no new session"
    );
    assert_eq!(r["info"]["mode"], "Real-time (WebRTC)");
    assert!(
        r["info"]["latency"].as_str().unwrap().ends_with(" s"),
        "latency shown: {}",
        r["info"]
    );
}

#[test]
fn plays_over_ll_hls_where_webrtc_is_missing() {
    let s = Server::start(DEMO);
    wait_for_segments(&s, "demo", "video", 1);
    let r = player("no-webrtc", &s, "demo", 0);
    eprintln!(
        "LL-HLS: playing {:?} ms after navigation",
        time_to_playing(&r)
    );
    assert_eq!(r["player"]["mode"], "hls");
    assert!(
        r["advanced"].as_f64().unwrap() > 1.0,
        "video did not advance: {r}"
    );
    check_dialect_switch(&r, 660.0);
    assert_eq!(r["info"]["mode"], "Smooth (HLS)");
    assert!(
        r["info"]["latency"].as_str().unwrap().ends_with(" s"),
        "latency shown: {}",
        r["info"]
    );
}

#[test]
fn falls_back_to_ll_hls_when_a_firewall_drops_udp() {
    // Relay and browser in a namespace of our own whose firewall drops every UDP packet and
    // the relay's ICE-TCP ports, as on a school network that lets only web traffic through
    // (where only UDP is dropped, WebRTC comes up over ICE-TCP: whep-chromium-play.rs).
    let Some(ns) = Netns::new("udp") else {
        eprintln!("SKIPPED: a network namespace needs root (CI runs as root)");
        return;
    };
    ns.nft("table inet jt {\n chain input {\n  type filter hook input priority 0; policy accept;\n  meta l4proto udp drop\n }\n}\n");
    let s = Server::start_in(Some(&ns), DEMO);
    // ICE-TCP listens at the UDP ports' numbers.
    let ports: std::collections::BTreeSet<String> =
        s.webrtc.iter().map(|a| a.port().to_string()).collect();
    let ports: Vec<String> = ports.into_iter().collect();
    ns.nft(&format!(
        "table inet jt_tcp {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  tcp dport {{ {} }} drop\n }}\n}}\n",
        ports.join(", ")
    ));
    // No wait for segments from out here: the namespace is closed; the player itself waits.
    let r = player_in(Some(&ns), "play", &s, "demo", 0);
    assert_eq!(r["player"]["mode"], "hls");
    let events = r["events"].as_array().unwrap();
    let modes: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "modechange")
        .map(|e| e["detail"]["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        ["webrtc", "hls"],
        "tried WebRTC, then LL-HLS: {}",
        r["events"]
    );
    let why = events
        .iter()
        .find(|e| e["name"] == "playbackerror")
        .expect("no playbackerror");
    assert!(
        why["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("did not connect"),
        "{why}"
    );
    assert!(
        r["advanced"].as_f64().unwrap() > 1.0,
        "video did not advance: {r}"
    );
    check_dialect_switch(&r, 660.0);
    assert_eq!(r["info"]["mode"], "Smooth (HLS)");
}

#[test]
fn falls_back_to_ll_hls_when_the_relay_refuses_webrtc() {
    let s = Server::start(&format!("{DEMO}[webrtc]\nenabled = false\n"));
    wait_for_segments(&s, "demo", "video", 1);
    let r = player("play", &s, "demo", 0);
    assert_eq!(r["player"]["mode"], "hls");
    let fell_back = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "fallback" && e["detail"]["from"] == "webrtc");
    assert!(
        fell_back,
        "no fallback from WebRTC recorded: {}",
        r["events"]
    );
    check_dialect_switch(&r, 660.0);
}

#[test]
fn audio_only_mode_for_weak_networks() {
    let s = Server::start(DEMO);
    wait_for_segments(&s, "demo", "audio-hak", 1);
    let r = player("audio", &s, "demo", 0);
    assert_eq!(r["player"]["mode"], "audio");
    assert_eq!(r["player"]["videoWidth"], 0, "audio only fetches no video");
    check_dialect_switch(&r, 880.0);
    assert_eq!(
        r["audioCard"], "仅音频 · 客家话",
        "the picture area says what is playing"
    );
    // The relay offers audio-only variants for native players as well.
    let master = get_text(&s.url("/hls/demo/index.m3u8"));
    assert!(
        master.contains("CODECS=\"mp4a.40.2\",AUDIO=\"dialects\"\naudio-cmn/index.m3u8"),
        "{master}"
    );
}

#[test]
fn shows_reconnecting_and_resumes_by_itself_after_a_publisher_restart() {
    let s = Server::start("[lectures]\ngrace_period_s = 30\n");
    let url = s.rtmp_url("hall");
    let mut first = ffmpeg_publish(&url, "320x180", 25, 440);
    wait_for_segments(&s, "hall", "video", 1);
    // Hold the browser for the watcher from here, so the restart below happens while it
    // watches rather than while it waits for another test's browser.
    let _browser = browser_lock();
    let watcher = watch_in_background(&s, "hall", 26);
    std::thread::sleep(Duration::from_secs(9));
    first.stop();
    std::thread::sleep(Duration::from_secs(5));
    let _again = ffmpeg_publish(&url, "320x180", 25, 440);
    let r = watcher.join().unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let samples = r["samples"].as_array().unwrap();
    let states: Vec<&str> = samples
        .iter()
        .map(|x| x["state"].as_str().unwrap())
        .collect();
    let first_reconnecting = states
        .iter()
        .position(|s| *s == "reconnecting")
        .expect("never showed reconnecting");
    assert!(states[..first_reconnecting].contains(&"playing"));
    assert!(
        states[first_reconnecting..].contains(&"playing"),
        "never resumed: {states:?}"
    );
    assert_eq!(*states.last().unwrap(), "playing", "{states:?}");
    let t: Vec<f64> = samples.iter().map(|x| x["t"].as_f64().unwrap()).collect();
    let tail = &t[t.len() - 5..];
    assert!(
        tail.windows(2).all(|w| w[1] > w[0]),
        "video not advancing at the end: {t:?}"
    );
    // The same engine all along: no reload of the page, no fallback.
    assert!(
        samples
            .iter()
            .all(|x| x["mode"] == "webrtc" || x["mode"].is_null()),
        "{r}"
    );
}

/// Runs the `watch` scenario for `seconds` on another thread while the caller drives the
/// publisher. The caller holds [`browser_lock`] so the browser starts at once.
fn watch_in_background(s: &Server, stream: &str, seconds: u32) -> std::thread::JoinHandle<Value> {
    let http = s.http;
    let stream = stream.to_string();
    std::thread::spawn(move || {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let out = output_within(
            Command::new("node").arg(dir.join("player.mjs")).args([
                "watch",
                &format!("http://{http}"),
                &stream,
                shots.to_str().unwrap(),
                &seconds.to_string(),
            ]),
            Duration::from_secs(seconds as u64 + 90),
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    })
}

#[test]
fn opened_before_the_start_it_plays_video_when_live_and_shows_the_end() {
    // A classroom opens the page early: countdown, then the lecture starts (the page is
    // told, nobody reloads), then it ends.
    let s = Server::start(
        "[lectures]\ngrace_period_s = 2\n[[lecture]]\nname = \"later\"\ntitle = \"烹饪培训\"\nstarts_at = \"2099-06-01T19:30:00+08:00\"\n",
    );
    let _browser = browser_lock();
    let watcher = watch_in_background(&s, "later", 34);
    std::thread::sleep(Duration::from_secs(6));
    let mut publisher = ffmpeg_publish(&s.rtmp_url("later"), "320x180", 25, 440);
    std::thread::sleep(Duration::from_secs(16));
    publisher.stop();
    let r = watcher.join().unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let samples = r["samples"].as_array().unwrap();
    let states: Vec<&str> = samples
        .iter()
        .map(|x| x["state"].as_str().unwrap())
        .collect();
    // "loading" lasts until the first answer from the API, which a slow machine may sample.
    assert_eq!(
        states.iter().find(|s| **s != "loading"),
        Some(&"scheduled"),
        "{states:?}"
    );
    let playing: Vec<&Value> = samples.iter().filter(|x| x["state"] == "playing").collect();
    assert!(playing.len() > 5, "never played: {states:?}");
    assert!(
        playing
            .iter()
            .all(|x| x["mode"] == "webrtc" && x["videoWidth"] == 320),
        "played, but not the picture over WebRTC: {r}"
    );
    assert_eq!(states.last(), Some(&"ended"), "{states:?}");
}

/// Live channels to `stream` held from 127.0.0.1 (and read, so they answer the relay's pings)
/// until the returned sender is dropped, or 120 s at most.
fn hold_channels(s: &Server, stream: &str, n: usize) -> std::sync::mpsc::Sender<()> {
    use futures_util::StreamExt;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let url = format!("ws://{}/ws/{stream}", s.http);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut held = Vec::new();
            for _ in 0..n {
                let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
                held.push(ws);
            }
            let _ = ready_tx.send(());
            for _ in 0..1200 {
                for ws in &mut held {
                    let _ = tokio::time::timeout(Duration::from_millis(10), ws.next()).await;
                }
                if !matches!(
                    stop_rx.try_recv(),
                    Err(std::sync::mpsc::TryRecvError::Empty)
                ) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("channels held");
    stop_tx
}

#[test]
fn refused_a_live_channel_it_polls_and_still_plays_when_the_lecture_goes_live() {
    // Every live channel this address may open is taken (a host holding sockets, or a
    // school's other classrooms): the player learns the lecture's state from the API.
    let s = Server::start(
        "[channel]\nmax_per_address = 2\n[lectures]\ngrace_period_s = 2\n[[lecture]]\nname = \"later\"\ntitle = \"烹饪培训\"\nstarts_at = \"2099-06-01T19:30:00+08:00\"\n",
    );
    let _held = hold_channels(&s, "later", 2);
    let _browser = browser_lock();
    let watcher = watch_in_background(&s, "later", 34);
    std::thread::sleep(Duration::from_secs(6));
    let mut publisher = ffmpeg_publish(&s.rtmp_url("later"), "320x180", 25, 440);
    std::thread::sleep(Duration::from_secs(16));
    publisher.stop();
    let r = watcher.join().unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let fell_back = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "fallback" && e["detail"]["from"] == "channel");
    assert!(
        fell_back,
        "no fallback from the live channel: {}",
        r["events"]
    );
    let samples = r["samples"].as_array().unwrap();
    let states: Vec<&str> = samples
        .iter()
        .map(|x| x["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.iter().find(|s| **s != "loading"),
        Some(&"scheduled"),
        "{states:?}"
    );
    let playing = samples.iter().filter(|x| x["state"] == "playing").count();
    assert!(playing > 5, "never played: {states:?}");
    assert_eq!(states.last(), Some(&"ended"), "{states:?}");
}

#[test]
fn embeds_from_another_origin_as_iframe_and_as_element() {
    let s = Server::start(DEMO);
    wait_for_segments(&s, "demo", "video", 1);
    let r = player("embed", &s, "demo", 0);
    assert_eq!(r["element"]["state"], "playing");
    assert_eq!(r["element"]["mode"], "hls");
    assert_eq!(r["iframe"]["state"], "playing");
    assert!(r["iframe"]["t"].as_f64().unwrap() > 0.2);
}

#[test]
fn lecture_states_and_titles_are_text() {
    let hostile = "<script>window.pwned=1</script><img src=x onerror=\\\"window.pwned=2\\\">讲座";
    let s = Server::start(&format!(
        "[lectures]\ngrace_period_s = 1\n[[lecture]]\nname = \"soon\"\ntitle = \"{hostile}\"\nstarts_at = \"2099-06-01T19:30:00+08:00\"\n[[lecture]]\nname = \"over\"\ntitle = \"已结束的讲座\"\n"
    ));
    // Not yet started: title as text and a countdown.
    let r = player("state", &s, "soon", 0);
    assert_eq!(r["player"]["state"], "scheduled");
    assert_eq!(
        r["overlay"]["title"],
        "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">讲座"
    );
    assert!(
        r["overlay"]["titleHtml"]
            .as_str()
            .unwrap()
            .starts_with("&lt;script&gt;")
    );
    assert_eq!(r["pwned"], Value::Null, "the title ran as HTML");
    let sub = r["overlay"]["sub"].as_str().unwrap();
    assert!(sub.contains("距开始还有") && sub.contains("2099"), "{sub}");
    // Ended: publish a little, stop, let the grace period pass.
    let mut p = ffmpeg_publish(&s.rtmp_url("over"), "320x180", 25, 440);
    wait_for_segments(&s, "over", "video", 1);
    p.stop();
    wait_until(Duration::from_secs(10), "the lecture to end", || {
        let v: Value = serde_json::from_str(&get_text(&s.url("/api/v1/streams/over"))).ok()?;
        (v["status"] == "ended").then_some(())
    });
    let r = player("state", &s, "over", 0);
    assert_eq!(r["player"]["state"], "ended");
    assert_eq!(r["overlay"]["msg"], "讲座已结束");
    assert_eq!(r["player"]["title"], "已结束的讲座");
}

#[test]
fn fits_a_phone_screen() {
    let s = Server::start(DEMO);
    wait_for_segments(&s, "demo", "video", 1);
    let r = player("mobile", &s, "demo", 0);
    let l = &r["layout"];
    assert!(
        l["scrollWidth"].as_f64().unwrap() <= 360.0,
        "scrolls sideways: {l}"
    );
    assert!(
        l["scrollHeight"].as_f64().unwrap() <= 640.0,
        "taller than the screen: {l}"
    );
    assert_eq!(l["controlsInside"], true, "a control is off screen: {l}");
    assert!(
        l["smallestControl"].as_f64().unwrap() >= 36.0,
        "too small to tap: {l}"
    );
    assert!(
        l["videoHeight"].as_f64().unwrap() >= 150.0,
        "no room left for the picture: {l}"
    );
    assert_eq!(r["player"]["state"], "playing");
}

#[test]
fn remembers_the_dialect_on_this_device() {
    let s = Server::start(DEMO);
    wait_for_segments(&s, "demo", "video", 1);
    let r = player("remember", &s, "demo", 0);
    assert_eq!(r["player"]["dialect"], "hak");
}

#[test]
fn classroom_raises_hand_and_asks_from_the_player() {
    let s = Server::start(DEMO);
    wait_for_segments(&s, "demo", "video", 1);
    let r = player("interact", &s, "demo", 0);
    assert_eq!(
        r["pausedByKeyboard"], true,
        "Space on the focused play button pauses"
    );
    let q: Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/demo/questions"))).unwrap();
    let list = q["questions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{q}");
    assert_eq!(list[0]["kind"], "hand");
    assert_eq!(list[0]["from"], "西和小学");
    assert_eq!(list[1]["text"], "第三题<b>怎么</b>做？");
}

#[test]
fn on_a_link_too_slow_for_the_picture_it_plays_the_sound_alone() {
    // A village classroom on 250 kbit/s watching a 1.2 Mbit/s lecture: the picture keeps
    // stalling, so the player (mode auto) plays the dialect's sound alone and says so.
    let (Some(hall), Some(village)) = (Netns::new("weaka"), Netns::new("weakb")) else {
        eprintln!("SKIPPED: network namespaces need root (CI runs as root)");
        return;
    };
    hall.link(&village, Some(250));
    let s = Server::start_reachable_in(
        &hall,
        "[demo]\nenabled = true\nwidth = 640\nheight = 360\nfps = 25\nkeyframe_interval = 50\nvideo_kbps = 1200\n",
    );
    std::thread::sleep(Duration::from_secs(3));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let _browser = browser_lock();
    let out = output_within(
        village.command("node").arg(dir.join("player.mjs")).args([
            "watch",
            &format!("http://10.99.1.1:{}", s.http.port()),
            "demo",
            shots.to_str().unwrap(),
            "45",
        ]),
        Duration::from_secs(150),
    );
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let events = r["events"].as_array().unwrap();
    let fell_back = events.iter().find(|e| {
        e["name"] == "fallback"
            && e["detail"]["reason"]
                .as_str()
                .is_some_and(|x| x.contains("weak network"))
    });
    assert!(
        fell_back.is_some(),
        "no weak-network fallback: {}",
        r["events"]
    );
    let samples = r["samples"].as_array().unwrap();
    let tail = &samples[samples.len() - 6..];
    assert!(
        tail.iter()
            .all(|x| x["mode"] == "audio" && x["state"] == "playing"),
        "not playing the sound alone at the end: {tail:?}"
    );
    let t: Vec<f64> = tail.iter().map(|x| x["t"].as_f64().unwrap()).collect();
    assert!(
        t.windows(2).all(|w| w[1] > w[0]),
        "sound not advancing: {t:?}"
    );
}

/// A hall relay (the demo lecture at 1.2 Mbit/s with a 320x180 picture in its ladder) and a
/// village behind a 400 kbit/s line; `scenario` of tests/node/player.mjs watched from the
/// village for `seconds`: its result, and the relay's `/metrics` and log afterwards.
fn watch_over_a_village_line(
    tag: &str,
    scenario: &str,
    seconds: &str,
) -> Option<(Value, String, String)> {
    let (Some(hall), Some(village)) = (
        Netns::new(&format!("{tag}a")),
        Netns::new(&format!("{tag}b")),
    ) else {
        eprintln!("SKIPPED: network namespaces need root (CI runs as root)");
        return None;
    };
    hall.link(&village, Some(400));
    let s = Server::start_reachable_in(
        &hall,
        "[demo]\nenabled = true\nwidth = 640\nheight = 360\nfps = 25\nkeyframe_interval = 50\nvideo_kbps = 1200\n\
         [ladder]\nenabled = true\nrungs = [{ width = 320, height = 180, kbps = 180 }]\n",
    );
    let in_hall = |path: &str| {
        let out = hall
            .command("curl")
            .args(["-sf", &s.url(path)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_until(Duration::from_secs(30), "the smaller picture", || {
        in_hall("/hls/demo/index.m3u8")
            .contains("RESOLUTION=320x180")
            .then_some(())
    });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let shots = screenshot_dir();
    let _browser = browser_lock();
    let out = output_within(
        village.command("node").arg(dir.join("player.mjs")).args([
            scenario,
            &format!("http://10.99.1.1:{}", s.http.port()),
            "demo",
            &shots,
            seconds,
        ]),
        Duration::from_secs(150),
    );
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let metrics = in_hall("/metrics");
    Some((r, metrics, s.log()))
}

#[test]
fn on_a_400_kbit_link_it_plays_the_smaller_picture_not_the_sound_alone() {
    // The same village classroom on 400 kbit/s, where the relay offers a smaller picture
    // (its ladder, 320x180 at 180 kbit/s next to the 1.2 Mbit/s source): the player (mode
    // auto) keeps a picture, the smaller one (the relay moves its WebRTC session to it, or
    // the player moves to it over LL-HLS), instead of the sound alone.
    let Some((r, _, _)) = watch_over_a_village_line("ladd", "watch", "50") else {
        return;
    };
    let events = r["events"].as_array().unwrap();
    assert!(
        !events.iter().any(|e| e["name"] == "fallback"
            && e["detail"]["reason"]
                .as_str()
                .is_some_and(|x| x.contains("picture keeps stalling"))),
        "it fell back to the sound alone: {}",
        r["events"]
    );
    let samples = r["samples"].as_array().unwrap();
    let tail = &samples[samples.len() - 8..];
    assert!(
        tail.iter()
            .all(|x| (x["mode"] == "hls" || x["mode"] == "webrtc")
                && x["state"] == "playing"
                && x["videoWidth"] == 320),
        "not playing the smaller picture at the end: {tail:?} (events: {})",
        r["events"]
    );
    let t: Vec<f64> = tail.iter().map(|x| x["t"].as_f64().unwrap()).collect();
    assert!(
        t.windows(2).all(|w| w[1] > w[0]),
        "picture not advancing: {t:?}"
    );
}

#[test]
fn a_webrtc_viewer_on_a_lossy_link_is_moved_to_the_smaller_picture() {
    // A WebRTC viewer (mode webrtc: the player does not fall back by itself) on 400 kbit/s
    // watching a 1.2 Mbit/s lecture with a 320x180 picture in its ladder: its receiver
    // reports loss, the relay moves it to the smaller picture at a keyframe, in the session.
    let Some((r, metrics, log)) = watch_over_a_village_line("move", "watch-webrtc", "40") else {
        return;
    };
    let samples = r["samples"].as_array().unwrap();
    assert!(
        samples.iter().any(|x| x["videoWidth"] == 640),
        "it never had the full picture: {samples:?}"
    );
    let tail = &samples[samples.len() - 8..];
    assert!(
        tail.iter()
            .all(|x| x["mode"] == "webrtc" && x["state"] == "playing" && x["videoWidth"] == 320),
        "not on the smaller picture over WebRTC at the end: {tail:?}"
    );
    let t: Vec<f64> = tail.iter().map(|x| x["t"].as_f64().unwrap()).collect();
    assert!(
        t.windows(2).all(|w| w[1] > w[0]),
        "picture not advancing: {t:?}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("jiangtang_webrtc_moved_to_small_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(log.contains("moved to the smallest picture"), "{log}");
}

/// Runs a `tests/node/player-firefox.mjs` scenario in Firefox ESR. Firefox pairs no
/// loopback candidates and gathers none without a default route: relay and browser share a
/// namespace of the test's own, with a default route that leads nowhere.
fn player_firefox(ns: &Netns, scenario: &str, s: &Server, stream: &str) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/puppeteer-core").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let _browser = browser_lock();
    let out = output_within(
        ns.command("node")
            .arg(dir.join("player-firefox.mjs"))
            .args([
                scenario,
                &format!("http://{}", s.http),
                stream,
                shots.to_str().unwrap(),
            ]),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "player-firefox.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["errors"], serde_json::json!([]), "{scenario}: {r}");
    r
}

/// The lecture as the API shows it, asked from inside `ns`.
fn api_in(ns: &Netns, s: &Server, stream: &str) -> Option<Value> {
    let out = ns
        .command("curl")
        .args(["-sf", &s.url(&format!("/api/v1/streams/{stream}"))])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn firefox_namespace(tag: &str) -> Option<Netns> {
    let ns = Netns::new(tag)?;
    ns.default_route();
    Some(ns)
}

#[test]
fn in_firefox_without_h264_it_plays_the_picture_over_ll_hls_at_once() {
    // A classroom PC on Firefox ESR that never got its OpenH264 plugin (offline network):
    // WebRTC can bring no picture, so the player moves to LL-HLS as soon as the relay's
    // answer says so (not after the 6 s ICE timeout) and tells the viewer why.
    let Some(ns) = firefox_namespace("ffauto") else {
        eprintln!("SKIPPED: a network namespace needs root (CI runs as root)");
        return;
    };
    let s = Server::start_in(Some(&ns), DEMO);
    let r = player_firefox(&ns, "auto", &s, "demo");
    let events = r["events"].as_array().unwrap();
    let at = |name: &str, f: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|e| e["name"] == name && f(&e["detail"]))
            .and_then(|e| e["at"].as_f64())
    };
    let connecting = at("statechange", &|d| d["state"] == "connecting").expect("connecting");
    let fell_back = at("fallback", &|d| {
        d["from"] == "webrtc"
            && d["reason"]
                .as_str()
                .is_some_and(|x| x.contains("no picture over WebRTC"))
    })
    .unwrap_or_else(|| panic!("no fallback for want of a picture: {}", r["events"]));
    eprintln!(
        "Firefox: LL-HLS chosen {:.0} ms after connecting began",
        fell_back - connecting
    );
    assert!(
        fell_back - connecting < 3000.0,
        "the player waited {:.0} ms before moving to LL-HLS: {}",
        fell_back - connecting,
        r["events"]
    );
    assert!(
        !events.iter().any(|e| e["name"] == "playbackerror"),
        "WebRTC was tried until it failed: {}",
        r["events"]
    );
    let p = &r["player"];
    assert_eq!(p["mode"], "hls", "{r}");
    assert_eq!(p["videoWidth"], 320, "the picture: {r}");
    assert!(
        r["advanced"].as_f64().unwrap() > 1.0,
        "video did not advance: {r}"
    );
    assert!(
        p["notice"].as_str().is_some_and(|n| n.contains("no H.264")),
        "the reason is shown: {r}"
    );
    check_dialect_switch(&r, 660.0);
    assert_eq!(r["afterSwitch"]["mode"], "hls", "{r}");
    // The sound-only session the answer opened was closed at once.
    wait_until(Duration::from_secs(10), "no WebRTC viewer left", || {
        let v = api_in(&ns, &s, "demo")?;
        let viewers = v["webrtc_viewers"].as_object()?;
        viewers.values().all(|n| n == 0).then_some(())
    });
}

#[test]
fn in_firefox_without_h264_webrtc_mode_plays_the_sound_and_says_why() {
    let Some(ns) = firefox_namespace("ffrtc") else {
        eprintln!("SKIPPED: a network namespace needs root (CI runs as root)");
        return;
    };
    let s = Server::start_in(Some(&ns), DEMO);
    let r = player_firefox(&ns, "webrtc", &s, "demo");
    let p = &r["player"];
    assert_eq!(p["mode"], "webrtc", "{r}");
    assert_eq!(p["state"], "playing", "{r}");
    assert_eq!(p["audioCard"], "Audio only · 普通话", "{r}");
    assert!(
        p["notice"]
            .as_str()
            .is_some_and(|n| n.contains("only the sound")),
        "the reason is shown: {r}"
    );
    assert!(
        r["advanced"].as_f64().unwrap() > 1.0,
        "sound did not advance: {r}"
    );
    check_dialect_switch(&r, 660.0);
    assert_eq!(r["afterSwitch"]["mode"], "webrtc", "{r}");
    assert_eq!(r["afterSwitch"]["audioCard"], "Audio only · 粤语", "{r}");
}
