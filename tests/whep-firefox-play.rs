//! WebRTC playback in Debian's Firefox ESR over WHEP. As Debian ships it (and as an offline
//! school PC keeps it: no OpenH264 plugin, which Firefox downloads on first run) Firefox
//! offers VP8, VP9 and AV1 but no H.264: the relay answers with sound only, with ICE
//! candidates the browser can reach, so it connects at once and hears the dialect (and a
//! switch). With OpenH264 Firefox offers H.264, which is answered with the picture: Debian
//! packages no OpenH264 plugin, so that case is checked on the offer it would send.
//!
//! Firefox is driven over WebDriver BiDi (puppeteer-core, `tests/node/firefox.mjs`), with
//! the relay in a network namespace of the test's own (Firefox pairs no loopback
//! candidates). Screenshots go to `target/test-screenshots/`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

const DEMO: &str = "[demo]\nenabled = true\nwidth = 320\nheight = 180\nfps = 25\nkeyframe_interval = 50\nvideo_kbps = 400\n";

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Runs `tests/node/whep-play.mjs` in Firefox inside `ns`.
fn firefox_whep_play(ns: &Netns, args: &[&str], timeout: Duration) -> Value {
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
            .env("BROWSER", "firefox")
            .arg(dir.join("whep-play.mjs"))
            .args(args)
            .arg(&shots),
        timeout,
    );
    assert!(
        out.status.success(),
        "whep-play.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "whep-play.mjs: no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Waits (from inside `ns`, which the test cannot reach from outside) until the lecture
/// has a playlist.
fn wait_live_in(ns: &Netns, s: &Server, stream: &str) {
    wait_until(
        Duration::from_secs(30),
        "the lecture's first segment",
        || {
            let out = ns
                .command("curl")
                .args(["-sf", &s.url(&format!("/hls/{stream}/video/index.m3u8"))])
                .output()
                .ok()?;
            (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("#EXTINF"))
                .then_some(())
        },
    );
}

#[test]
fn firefox_without_h264_connects_at_once_and_hears_the_dialect() {
    let Some(ns) = Netns::new("ffwhep") else {
        eprintln!("SKIPPED: a network namespace needs root (CI runs as root)");
        return;
    };
    ns.default_route();
    let s = Server::start_in(Some(&ns), DEMO);
    wait_live_in(&ns, &s, "demo");
    let r = firefox_whep_play(
        &ns,
        &[&format!("http://{}", s.http), "demo", "cmn", "yue", "3"],
        Duration::from_secs(120),
    );
    eprintln!(
        "Firefox WHEP: connected {:.0} ms after the offer, dialect heard {:.0} ms after the request",
        f(&r["connectMs"]),
        f(&r["switchHeardMs"])
    );
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["status"], 201, "{r}");
    assert_eq!(
        r["offerH264"], false,
        "Firefox offered H.264: an OpenH264 plugin is installed, and this test is about Firefox without one: {r}"
    );
    assert_eq!(r["answerVideo"], false, "sound only: {r}");
    // ICE completes as for any other browser; without candidates it can reach, it never
    // did (and the player waited 6 s for nothing).
    assert!(
        f(&r["connectMs"]) < 3000.0,
        "ICE did not connect promptly: {r}"
    );
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.iter().all(|x| x["state"] == "connected"), "{r}");
    assert!(r["audio"]["packetsReceived"].as_u64().unwrap() > 100, "{r}");
    assert!(
        (f(&r["hzBefore"]) - 440.0).abs() < 10.0,
        "普通话 at 440 Hz, heard {}",
        r["hzBefore"]
    );
    assert_eq!(r["switchStatus"], 204, "{r}");
    assert!(
        (f(&r["hzAfter"]) - 660.0).abs() < 10.0,
        "粤语 at 660 Hz, heard {}",
        r["hzAfter"]
    );
    assert_eq!(r["viewers"]["yue"], 1, "{r}");
    assert_eq!(r["deleteStatus"], 200, "{r}");
}

#[test]
fn firefox_offers_are_answered_by_what_they_can_play() {
    // The offers as Firefox ESR sends them: as shipped (captured), and with OpenH264 (the
    // H.264 payload types the plugin adds; Debian has no package for it).
    let s = Server::start("");
    let _p = ffmpeg_publish(&s.rtmp_url("ff"), "320x180", 25, 440);
    wait_for_segments(&s, "ff", "video", 1);
    let url = s.url("/whep/ff");
    // Each engine (one per core) has its port; an offer gets the one of the engine it
    // went to.
    let ports: Vec<String> = s
        .webrtc
        .iter()
        .map(|a| format!(" {} typ host", a.port()))
        .collect();
    let sections = |answer: &str| -> Vec<String> {
        answer
            .split("\r\nm=")
            .skip(1)
            .map(|m| format!("m={m}"))
            .collect()
    };
    for (offer, picture) in [
        (
            include_str!("../relay/src/whep/testdata/firefox-esr-153-offer.sdp"),
            false,
        ),
        (
            include_str!("../relay/src/whep/testdata/firefox-esr-153-openh264-offer.sdp"),
            true,
        ),
    ] {
        let (status, _, body) = send("POST", &url, Some("application/sdp"), offer.as_bytes());
        let answer = String::from_utf8(body).unwrap();
        assert_eq!(status, 201, "{answer}");
        let m = sections(&answer);
        assert_eq!(m.len(), 2, "{answer}");
        let (video, audio) = (&m[0], &m[1]);
        assert!(audio.starts_with("m=audio 9 ") && audio.contains("opus/48000"));
        if picture {
            assert!(
                video.starts_with("m=video 9 UDP/TLS/RTP/SAVPF 126 ")
                    && video.contains("packetization-mode=1"),
                "{answer}"
            );
            assert!(answer.contains("a=group:BUNDLE 0 1\r\n"), "{answer}");
        } else {
            assert!(video.starts_with("m=video 0 "), "{answer}");
            assert!(answer.contains("a=group:BUNDLE 1\r\n"), "{answer}");
        }
        // The relay's candidate, in the first bundled section only.
        let tagged = if picture { video } else { audio };
        assert!(
            tagged.contains("a=candidate:") && ports.iter().any(|p| tagged.contains(p)),
            "{answer}"
        );
        let other = if picture { audio } else { video };
        assert!(!other.contains("a=candidate:"), "{answer}");
    }
}
