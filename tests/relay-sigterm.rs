//! SIGTERM of the real binary under live lectures: ffmpeg publishing over RTMP and over SRT,
//! Chromium over WHIP, HLS players polling and a WebRTC viewer watching. The relay exits 0
//! within a bound; before it does, the players see `EXT-X-ENDLIST`, the publishers are told
//! (RTMP: an `onStatus` error before the close, which ffmpeg reports), every recording is
//! closed as complete (no recovery at the next start, and its replay decodes to the end), and
//! the `lecture.ended` webhooks are delivered or kept in the durable queue, sent after the
//! restart.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::replay::Folder;
use common::*;
use serde_json::Value;

/// Polls a media playlist every 100 ms until the relay stops answering; keeps the last
/// playlist it got.
fn poll_playlist(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            let got = rt.block_on(async {
                let r = client.get(&url).send().await?;
                let ok = r.status() == 200;
                Ok::<_, reqwest::Error>(ok.then_some(r.text().await?))
            });
            match got {
                Ok(Some(text)) => last = text,
                Ok(None) => {}
                Err(_) if !last.is_empty() => break,
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last
    })
}

fn node_whip_publish(server: String, stream: &str, seconds: u32) -> std::thread::JoinHandle<Value> {
    let stream = stream.to_string();
    std::thread::spawn(move || {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "tests/node has no node_modules: run scripts/test.sh, which installs them"
        );
        let out = output_within(
            Command::new("node").arg(dir.join("whip.mjs")).args([
                "publish-until-closed",
                &server,
                &stream,
                "hall-key-123",
                &seconds.to_string(),
            ]),
            Duration::from_secs(seconds as u64 + 60),
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "whip.mjs: no JSON ({e}): {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    })
}

/// Every recording folder's `recording.json` under `dir`.
fn recording_files(dir: &Folder) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir.0).unwrap() {
        let p = e.unwrap().path().join("recording.json");
        if let Ok(text) = std::fs::read_to_string(&p) {
            out.push(serde_json::from_str(&text).unwrap());
        }
    }
    out
}

#[test]
fn sigterm_ends_every_lecture_cleanly_and_exits_0() {
    let dir = Folder::new("sigterm");
    let (hook, got) = hooks::receiver();
    let config = format!(
        "[[lecture]]\nname = \"by-whip\"\npublish_key = \"hall-key-123\"\n\n\
         [lectures]\ngrace_period_s = 60\n\n[recording]\nenabled = true\ndir = \"{}\"\n\
         min_free_mb = 0\nwebhook_url = \"{hook}\"\n",
        dir.0.display()
    );
    let mut s = Server::start(&config);
    let _browser = browser_lock();
    let mut rtmp = ffmpeg_publish(&s.rtmp_url("by-rtmp"), "320x180", 25, 440);
    let mut srt = common::replay::srt_lecture(&s, "by-srt", &[("cmn", 440), ("yue", 660)], 120);
    let whip = node_whip_publish(format!("http://{}", s.http), "by-whip", 60);
    let lectures = ["by-rtmp", "by-srt", "by-whip"];
    for l in lectures {
        wait_for_segments(&s, l, "video", 2);
        wait_for_segments(&s, l, "audio-cmn", 2);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let viewer = rt.block_on(whep::Viewer::start(s.http, "by-rtmp"));
    wait_until(Duration::from_secs(10), "the WebRTC viewer's video", || {
        (viewer.video_frames() > 10).then_some(())
    });
    let stop = Arc::new(AtomicBool::new(false));
    let players: Vec<_> = lectures
        .iter()
        .flat_map(|l| {
            ["video", "audio-cmn"].map(|r| {
                (
                    format!("{l}/{r}"),
                    poll_playlist(s.url(&format!("/hls/{l}/{r}/index.m3u8")), stop.clone()),
                )
            })
        })
        .collect();
    // Every lecture is being recorded.
    wait_until(Duration::from_secs(20), "three recordings", || {
        (recording_files(&dir).len() == 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));

    // An LL-HLS player blocked on a playlist reload for a segment that never comes: the
    // end answers it. It asks for the segment after the one being made (whole segments, no
    // part: a part that far ahead may pass the Advance Part Limit and be refused at once,
    // depending on where in its segment the playlist was read).
    // Asked just as a segment begins, so the answer is at least a whole segment away.
    let url = s.url("/hls/by-srt/video/index.m3u8");
    let next = wait_until(Duration::from_secs(20), "a segment just begun", || {
        let (status, _, body) = get(&url);
        let text = String::from_utf8_lossy(&body);
        let pl = m3u8_rs::parse_media_playlist_res(&body).ok()?;
        let tail = text.rsplit_once("#EXTINF").map_or("", |t| t.1);
        let parts_begun = tail.matches("#EXT-X-PART:").count();
        (status == 200 && pl.segments.len() >= 2 && parts_begun <= 1)
            .then(|| pl.media_sequence + pl.segments.len() as u64)
    });
    let blocked_url = s.url(&format!(
        "/hls/by-srt/video/index.m3u8?_HLS_msn={}",
        next + 1
    ));
    let blocked = std::thread::spawn(move || get(&blocked_url));
    std::thread::sleep(Duration::from_millis(300));

    let asked = Instant::now();
    let status = s.terminate(Duration::from_secs(20));
    let took = asked.elapsed();
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "exit after {took:?}: {}",
        s.log()
    );
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    let log = s.log();
    assert!(!log.contains("still being written at exit"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    let (status, _, body) = blocked.join().expect("the blocked reload was answered");
    let body = String::from_utf8_lossy(&body);
    assert!(
        status == 200 && body.contains("#EXT-X-ENDLIST"),
        "{status} {body}"
    );
    // The SRT encoder saw its connection end.
    assert!(
        srt.wait(Duration::from_secs(10)).is_some(),
        "ffmpeg still sending over SRT"
    );
    // Players saw the end of every playlist.
    stop.store(true, Ordering::Relaxed);
    for (what, p) in players {
        let last = p.join().unwrap();
        assert!(last.contains("#EXT-X-ENDLIST"), "{what}: {last}");
    }
    // The RTMP publisher was told, then the connection closed: ffmpeg stops and says why.
    assert!(
        rtmp.wait(Duration::from_secs(10)).is_some(),
        "ffmpeg still publishing"
    );
    let mut said = String::new();
    let _ = rtmp.0.stderr.take().unwrap().read_to_string(&mut said);
    assert!(said.contains("shutting down"), "ffmpeg said: {said}");
    // The WHIP publisher's session ended (the browser's connection left `connected`).
    let w = whip.join().unwrap();
    assert_eq!(w["status"], 201, "{w}");
    assert_eq!(w["connected"], true, "{w}");
    assert_ne!(w["state"], "connected", "{w}");

    // Every recording was closed as complete, none left to recover.
    let files = recording_files(&dir);
    assert_eq!(files.len(), 3);
    for f in &files {
        assert_eq!(f["state"], "complete", "{f}");
        assert!(f["ended"].is_string(), "{f}");
        assert!(f["duration_s"].as_f64().unwrap() > 3.0, "{f}");
    }
    let delivered_before_exit = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(e, _)| e == "lecture.ended")
        .count();

    // The receiver answers at once: every end went out before the exit.
    assert_eq!(delivered_before_exit, 3, "{}", s.log());
    eprintln!("exit {took:?} after SIGTERM");

    // At the next start nothing is recovered and each replay decodes to its end.
    let s = Server::start(&config);
    assert!(
        get_text(&s.url("/metrics")).contains("jiangtang_recordings_recovered_total 0\n"),
        "{}",
        s.log()
    );
    for f in &files {
        let id = f["id"].as_str().unwrap();
        let out = output_within(
            Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-i"])
                .arg(s.url(&format!("/replay/{id}/index.m3u8")))
                // The browser's frames come at uneven times: timestamps as recorded, not
                // rounded to a frame rate (which would collide).
                .args(["-map", "0", "-enc_time_base:v", "-1", "-f", "null", "-"]),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every lecture's end reached the platform: before the exit, or from the queue after.
    let ended = wait_until(Duration::from_secs(30), "three lecture.ended", || {
        let g = got.lock().unwrap();
        let ended: Vec<String> = g
            .iter()
            .filter(|(e, _)| e == "lecture.ended")
            .map(|(_, b)| b["lecture"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        (ended.len() >= 3).then_some(ended)
    });
    let mut names = ended.clone();
    names.sort();
    names.dedup();
    assert_eq!(names, ["by-rtmp", "by-srt", "by-whip"], "{ended:?}");
}
