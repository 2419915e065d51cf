//! WebRTC playback in Debian's headless Chromium over WHEP, from a page of another origin:
//! video frames decode and advance, audio arrives, switching dialect during the session
//! changes the tone heard, and the session survives a publisher restart without a new
//! offer/answer. Screenshots go to `target/test-screenshots/`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

fn node(script: &str, args: &[&str], timeout: Duration) -> serde_json::Value {
    let _browser = browser_lock();
    node_unlocked(script, args, timeout)
}

/// For a caller already holding [`browser_lock`].
fn node_unlocked(script: &str, args: &[&str], timeout: Duration) -> serde_json::Value {
    node_in(None, script, args, timeout)
}

fn shots() -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn chromium_plays_over_whep_and_switches_dialect() {
    // An 8 s keyframe interval (the relay caches GOPs up to 10 s): a viewer connecting at
    // a random point of it would wait up to 8 s for the next keyframe without the cache.
    let s = Server::start(
        "[demo]\nenabled = true\nwidth = 320\nheight = 180\nfps = 25\nkeyframe_interval = 200\nvideo_kbps = 400\n",
    );
    wait_for_segments(&s, "demo", "video", 1);
    let r = node(
        "whep-play.mjs",
        &[
            &format!("http://{}", s.http),
            "demo",
            "cmn",
            "yue",
            "4",
            &shots(),
        ],
        Duration::from_secs(120),
    );
    eprintln!(
        "WHEP: connect {:.0} ms, first frame {:.0} ms after connecting, dialect heard {:.0} ms after the request",
        f(&r["connectMs"]),
        f(&r["firstFrameAfterConnectMs"]),
        f(&r["switchHeardMs"])
    );
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["status"], 201, "{r}");
    assert!(
        f(&r["firstFrameAfterConnectMs"]) < 2500.0,
        "no picture from the GOP cache: {r}"
    );
    let metrics = get_text(&s.url("/metrics"));
    assert!(
        metrics.contains("jiangtang_webrtc_gop_bursts_total 1"),
        "the viewer did not start from the cached GOP: {metrics}"
    );
    let samples = r["samples"].as_array().unwrap();
    let decoded: Vec<u64> = samples
        .iter()
        .map(|x| x["framesDecoded"].as_u64().unwrap())
        .collect();
    assert!(
        decoded.windows(2).all(|w| w[1] > w[0]),
        "frames stopped: {decoded:?}"
    );
    assert!(samples.iter().all(|x| x["state"] == "connected"));
    assert!(r["audio"]["packetsReceived"].as_u64().unwrap() > 100, "{r}");
    assert!(
        (f(&r["hzBefore"]) - 440.0).abs() < 10.0,
        "普通话 at 440 Hz, heard {}",
        r["hzBefore"]
    );
    assert_eq!(r["switchStatus"], 204);
    assert!(
        r["switchHeardMs"].is_number(),
        "the switch was never heard: {r}"
    );
    assert!(
        (f(&r["hzAfter"]) - 660.0).abs() < 10.0,
        "粤语 at 660 Hz, heard {}",
        r["hzAfter"]
    );
    assert_eq!(r["viewers"]["yue"], 1, "{r}");
    assert_eq!(r["viewers"]["cmn"], 0, "{r}");
    assert_eq!(r["video"]["frameWidth"], 320);
    assert_eq!(r["deleteStatus"], 200);
}

#[test]
fn chromium_session_survives_a_publisher_restart() {
    let s = Server::start("[lectures]\ngrace_period_s = 30\n");
    let url = s.rtmp_url("again?lang=cmn");
    let mut first = ffmpeg_publish(&url, "320x180", 25, 440);
    wait_for_segments(&s, "again", "video", 1);
    let server = format!("http://{}", s.http);
    let shots = shots();
    // Hold the browser for the watcher from here, so the restart below happens while it
    // watches rather than while it waits for another test's browser.
    let _browser = browser_lock();
    let watcher = std::thread::spawn(move || {
        node_unlocked(
            "whep-play.mjs",
            &[&server, "again", "cmn", "", "24", &shots],
            Duration::from_secs(120),
        )
    });
    std::thread::sleep(Duration::from_secs(9));
    first.stop();
    std::thread::sleep(Duration::from_secs(4));
    let _second = ffmpeg_publish(&url, "320x180", 25, 440);
    let r = watcher.join().unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let samples = r["samples"].as_array().unwrap();
    // Connected all along: no ICE restart, no new offer.
    assert!(samples.iter().all(|x| x["state"] == "connected"), "{r}");
    let decoded: Vec<u64> = samples
        .iter()
        .map(|x| x["framesDecoded"].as_u64().unwrap())
        .collect();
    // Decoding stalls during the gap, then resumes and keeps going.
    let stalled = decoded.windows(2).any(|w| w[1] == w[0]);
    assert!(stalled, "the gap is not visible: {decoded:?}");
    // The last 4 s after the restart: decoding goes on. One half-second sample without a new
    // frame is tolerated (a retransmission wait on a loaded 2-core machine running the other
    // browser tests beside it, seen once in CI); the gain must still be most of the rate.
    let tail = &decoded[decoded.len() - 8..];
    let flat = tail.windows(2).filter(|w| w[1] <= w[0]).count();
    let gained = tail[7].saturating_sub(tail[0]);
    assert!(
        flat <= 1 && gained >= 40,
        "video did not resume: {decoded:?}"
    );
    // Continuous sequence numbers: Chromium saw no loss (a jump would count as lost packets).
    assert_eq!(r["video"]["packetsLost"], 0, "{r}");
    assert_eq!(r["audio"]["packetsLost"], 0, "{r}");
    assert!(
        s.log().contains("publishing session"),
        "restart not seen by the relay"
    );
}

/// ffmpeg publishing a white frame and a 40 ms beep at the start of every second.
fn flash_and_beep(url: &str) -> Proc {
    Proc(
        Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "color=c=black:s=320x180:r=25,drawbox=c=white:t=fill:enable='lt(mod(t\\,1)\\,0.04)'"])
            .args(["-f", "lavfi", "-i", "aevalsrc='if(lt(mod(t\\,1)\\,0.04)\\,0.8*sin(2*PI*1000*t)\\,0)':s=48000"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "50", "-pix_fmt", "yuv420p"])
            .args(["-c:a", "aac", "-b:a", "96k", "-f", "flv", url])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ffmpeg"),
    )
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn webrtc_lip_sync_settles_near_hls() {
    let s = Server::start("");
    let _p = flash_and_beep(&s.rtmp_url("sync"));
    wait_for_segments(&s, "sync", "video", 2);
    let server = format!("http://{}", s.http);
    // Reference: HLS playback, whose timestamps are exact; what it shows is the measuring
    // method's own offset (audio output path, frame display estimate). Both in one browser.
    let r = node(
        "lipsync.mjs",
        &[&server, "sync", "12", "30"],
        Duration::from_secs(150),
    );
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let (hls, whep) = (&r["hls"], &r["webrtc"]);
    let offsets = |r: &serde_json::Value| -> Vec<f64> {
        r["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (h, w) = (offsets(hls), offsets(whep));
    eprintln!("lip sync (audio minus video, ms): HLS {h:?}; WebRTC {w:?}");
    assert!(
        h.len() >= 6 && w.len() >= 20,
        "too few flashes/beeps: {hls} {whep}"
    );
    let reference = median(&h);
    // After the browser's synchroniser has settled (it adjusts gradually), WebRTC plays audio
    // and video close to how HLS plays them. "Close" is 75 ms: Chromium's synchroniser leaves
    // differences under 30 ms alone by design, the reference itself moves ±15 ms between
    // runs, and two pipelines timed under a loaded CI machine add ±20 ms. What this guards
    // against — wrong sender reports, audio and video in separate streams — shows as 150–400
    // ms that never settles.
    let settled = median(&w[w.len() - 8..]);
    assert!(
        (settled - reference).abs() < 75.0,
        "WebRTC A/V offset {settled:.0} ms vs HLS {reference:.0} ms"
    );
    let first = median(&w[..4]);
    eprintln!(
        "WebRTC offset at start {first:.0} ms, settled {settled:.0} ms; HLS {reference:.0} ms"
    );
}

#[test]
fn lost_video_packets_are_retransmitted() {
    // Relay and browser in a namespace whose firewall drops 5 % of the large UDP packets
    // (video RTP and its retransmissions), like a congested school uplink. NACK/RTX from the
    // relay's send buffer must repair them: without repair, every loss breaks the picture
    // until the next keyframe, 2 s away.
    let Some(ns) = Netns::new("loss") else {
        eprintln!("SKIPPED: a network namespace needs root (CI runs as root)");
        return;
    };
    ns.nft("table inet jt {\n chain out {\n  type filter hook output priority 0; policy accept;\n  meta l4proto udp udp length > 1000 numgen random mod 100 < 5 drop\n }\n}\n");
    let s = Server::start_in(
        Some(&ns),
        "[demo]\nenabled = true\nwidth = 640\nheight = 360\nfps = 25\nkeyframe_interval = 50\nvideo_kbps = 1200\n",
    );
    let server = format!("http://{}", s.http);
    let _browser = browser_lock();
    // Let the demo get going (its first segment) before watching.
    std::thread::sleep(Duration::from_secs(4));
    let r = node_in(
        Some(&ns),
        "whep-play.mjs",
        &[&server, "demo", "cmn", "", "12", &shots()],
        Duration::from_secs(120),
    );
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["status"], 201, "{r}");
    let v = &r["video"];
    eprintln!("under 5 % loss: {v}");
    assert!(
        v["nackCount"].as_u64().unwrap() > 0,
        "no loss was seen: {v}"
    );
    assert!(
        v["retransmittedPacketsReceived"].as_u64().unwrap() > 0,
        "nothing was retransmitted: {v}"
    );
    // Frames kept coming at (nearly) the full rate across the whole watch.
    let samples = r["samples"].as_array().unwrap();
    let (a, b) = (&samples[0], samples.last().unwrap());
    let fps = (f(&b["framesDecoded"]) - f(&a["framesDecoded"])) / (f(&b["t"]) - f(&a["t"]));
    assert!(fps > 22.0, "{fps:.1} frames/s decoded under loss: {r}");
}

#[test]
fn a_slow_viewer_slows_nobody_else() {
    // The relay and one viewer on a good network; a second viewer in another namespace whose
    // link carries 300 kbit/s of the lecture's 1.2 Mbit/s (a classroom on a poor line).
    let (Some(hall), Some(village)) = (Netns::new("slowa"), Netns::new("slowb")) else {
        eprintln!("SKIPPED: network namespaces need root (CI runs as root)");
        return;
    };
    hall.link(&village, Some(300));
    let s = Server::start_reachable_in(
        &hall,
        "[demo]\nenabled = true\nwidth = 640\nheight = 360\nfps = 25\nkeyframe_interval = 50\nvideo_kbps = 1200\n",
    );
    let _browser = browser_lock();
    std::thread::sleep(Duration::from_secs(4));
    let port = s.http.port();
    let shots = shots();
    let (fast, slow) = std::thread::scope(|scope| {
        let slow = scope.spawn(|| {
            node_in(
                Some(&village),
                "whep-play.mjs",
                &[
                    &format!("http://10.99.1.1:{port}"),
                    "demo",
                    "cmn",
                    "",
                    "14",
                    &shots,
                ],
                Duration::from_secs(120),
            )
        });
        let fast = node_in(
            Some(&hall),
            "whep-play.mjs",
            &[
                &format!("http://{}", s.http),
                "demo",
                "cmn",
                "",
                "12",
                &shots,
            ],
            Duration::from_secs(120),
        );
        (fast, slow.join().unwrap())
    });
    for r in [&fast, &slow] {
        assert_eq!(r["errors"], serde_json::json!([]), "{r}");
        assert_eq!(r["status"], 201, "{r}");
    }
    let rate = |r: &serde_json::Value| {
        let samples = r["samples"].as_array().unwrap();
        let (a, b) = (&samples[0], samples.last().unwrap());
        (f(&b["framesDecoded"]) - f(&a["framesDecoded"])) / (f(&b["t"]) - f(&a["t"]))
    };
    eprintln!(
        "fast viewer: {:.1} frames/s {}; slow viewer: {:.1} frames/s {}",
        rate(&fast),
        fast["video"],
        rate(&slow),
        slow["video"]
    );
    // The viewer on the good network gets everything, at the full rate. (Not "no freeze":
    // two browsers on two cores can freeze a frame for CPU alone.)
    assert!(rate(&fast) > 23.0, "{fast}");
    assert_eq!(fast["video"]["packetsLost"], 0, "{fast}");
    assert_eq!(fast["video"]["nackCount"], 0, "{fast}");
    // The slow one lost packets and asked for keyframes; the relay skipped frames for it
    // (waiting for the next keyframe) instead of queueing what it could not take.
    assert!(slow["video"]["packetsLost"].as_u64().unwrap() > 0, "{slow}");
    let metrics = wait_until(Duration::from_secs(5), "metrics", || {
        let out = hall
            .command("curl")
            .args(["-sf", &s.url("/metrics")])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let skipped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jiangtang_webrtc_frames_skipped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        skipped > 0,
        "no frames skipped for the slow viewer:\n{metrics}"
    );
}

#[test]
fn chromium_plays_over_ice_tcp_where_udp_is_dropped() {
    // A school network that drops UDP: the classroom's namespace drops every UDP packet
    // in and out. WebRTC must come up over the relay's ICE-TCP candidate, and the web
    // player must stay on WebRTC rather than fall back to LL-HLS.
    let (Some(hall), Some(school)) = (Netns::new("tcph"), Netns::new("tcps")) else {
        eprintln!("SKIPPED: network namespaces need root (CI runs as root)");
        return;
    };
    hall.link(&school, None);
    school.nft(
        "table inet noudp {
           chain i { type filter hook input priority 0; meta l4proto udp drop; }
           chain o { type filter hook output priority 0; meta l4proto udp drop; }
         }",
    );
    let s = Server::start_reachable_in(
        &hall,
        "[demo]\nenabled = true\nwidth = 640\nheight = 360\nfps = 25\nkeyframe_interval = 25\nvideo_kbps = 800\n",
    );
    // Junk first, on the ICE-TCP port (the UDP port's number): a frame of garbage, then a
    // length of 0 (closed); the viewer below must not notice.
    let port = s.webrtc[0].port();
    for junk in ["\\x00\\x04abcd\\xff\\xff", "\\x00\\x00"] {
        let st = hall
            .command("bash")
            .args([
                "-c",
                &format!("printf '{junk}' > /dev/tcp/10.99.1.1/{port}"),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "no ICE-TCP listener on {port}");
    }
    let _browser = browser_lock();
    std::thread::sleep(Duration::from_secs(3));
    let server = format!("http://10.99.1.1:{}", s.http.port());
    let shots = shots();
    let r = node_in(
        Some(&school),
        "whep-play.mjs",
        &[&server, "demo", "yue", "", "8", &shots],
        Duration::from_secs(120),
    );
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["status"], 201, "{r}");
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.iter().all(|x| x["state"] == "connected"), "{r}");
    let (a, b) = (&samples[0], samples.last().unwrap());
    let fps = (f(&b["framesDecoded"]) - f(&a["framesDecoded"])) / (f(&b["t"]) - f(&a["t"]));
    assert!(fps > 20.0, "{fps:.1} frames/s over ICE-TCP: {r}");
    assert!((f(&r["hzEnd"]) - 660.0).abs() < 25.0, "粤语 not heard: {r}");
    // The web player in auto mode stays on WebRTC (over TCP) instead of LL-HLS.
    let page = format!("{server}/play/demo");
    let p = node_in(
        Some(&school),
        "hls-watch.mjs",
        &[&page, "14", &shots],
        Duration::from_secs(120),
    );
    assert_eq!(p["errors"], serde_json::json!([]), "{p}");
    let ps = p["samples"].as_array().unwrap();
    let tail: Vec<_> = ps.iter().rev().take(8).collect();
    assert!(
        tail.iter()
            .all(|x| x["mode"] == "webrtc" && x["state"] == "playing"),
        "the player left WebRTC: {p}"
    );
    let metrics = String::from_utf8(
        hall.command("curl")
            .args(["-sf", &s.url("/metrics")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let tcp: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jiangtang_webrtc_tcp_connections_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(tcp >= 2.0, "ICE-TCP not used: {tcp}");
}
