//! Recording and replays end to end: real publishers (ffmpeg over SRT and RTMP), the relay
//! killed with SIGKILL and restarted, a disk that fills up under a live lecture (a tmpfs in
//! a mount namespace of the test's own), a real webhook receiver, and ffprobe reading the
//! replays.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::replay::{Folder as TempDir, recordings};
use common::*;
use serde_json::Value;

/// The only recording of `lecture`, once `ok` holds for it.
fn wait_recording(s: &Server, lecture: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_until(Duration::from_secs(40), what, || {
        let r = recordings(s, lecture);
        assert!(r.len() <= 1, "one recording per lecture: {r:?}");
        r.into_iter().next().filter(|r| ok(r))
    })
}

/// Seconds of media a live media playlist lists: its segments and the parts of the open one.
fn listed_seconds(playlist: &str) -> f64 {
    let mut total = 0.0;
    let mut open_parts = 0.0;
    for line in playlist.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            total += d
                .trim_end_matches(',')
                .split(',')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap();
            open_parts = 0.0;
        } else if line.starts_with("#EXT-X-PART:") {
            open_parts += attr(line, "DURATION").unwrap().parse::<f64>().unwrap();
        }
    }
    // Parts of finished segments are listed too; only those after the last EXTINF count.
    total + open_parts
}

/// Counts lines equal to `#EXT-X-DISCONTINUITY`.
fn discontinuities(playlist: &str) -> usize {
    playlist
        .lines()
        .filter(|l| *l == "#EXT-X-DISCONTINUITY")
        .count()
}

#[test]
fn three_srt_dialects_survive_kill_9_and_replay_labelled() {
    let dir = TempDir::new("kill9");
    let config = format!(
        "[recording]\ndir = \"{}\"\n[hls]\nwindow_segments = 30\n[lectures]\ngrace_period_s = 60\n",
        dir.0.display()
    );
    let mut s = Server::start(&config);
    let mut enc = Proc(
        ffmpeg_srt(
            &srt_url(&s, "publish:hall", ""),
            &[("cmn", 440), ("yue", 660), ("hak", 880)],
            &[],
        )
        .spawn()
        .unwrap(),
    );
    let live = wait_recording(&s, "hall", "8 s recorded", |r| {
        r["duration_s"].as_f64().is_some_and(|d| d >= 8.0)
            && r["dialects"].as_array().unwrap().len() == 3
    });
    assert_eq!(live["state"], "recording");
    let id = live["id"].as_str().unwrap().to_string();
    // While live the recording is an EVENT playlist a latecomer can start from.
    let event = get_text(&s.url(&format!("/replay/{id}/audio-yue/index.m3u8")));
    assert!(
        event.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !event.contains("#EXT-X-ENDLIST"),
        "{event}"
    );

    // The encoder stops; the lecture waits for it (grace), the recording stays open.
    enc.stop();
    std::thread::sleep(Duration::from_secs(2));
    let streamed = listed_seconds(&get_text(&s.url("/hls/hall/video/index.m3u8")));
    let part = attr(
        get_text(&s.url("/hls/hall/video/index.m3u8"))
            .lines()
            .find(|l| l.starts_with("#EXT-X-PART-INF"))
            .unwrap(),
        "PART-TARGET",
    )
    .unwrap()
    .parse::<f64>()
    .unwrap();
    s.kill9();

    let s = Server::start(&config);
    let rec = wait_recording(&s, "hall", "the recording recovered", |r| {
        r["state"] == "recovered"
    });
    assert_eq!(rec["id"], id.as_str());
    let recovered = rec["duration_s"].as_f64().unwrap();
    assert!(
        (recovered - streamed).abs() <= part + 0.05,
        "recovered {recovered} s of {streamed} s streamed (part target {part})"
    );
    let langs: Vec<_> = rec["dialects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["lang"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(langs, ["cmn", "yue", "hak"]);

    let vod = get_text(&s.url(&format!("/replay/{id}/video/index.m3u8")));
    assert!(
        vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.ends_with("#EXT-X-ENDLIST\n"),
        "{vod}"
    );
    // ffprobe reads the replay: three labelled dialects and the picture, its duration
    // within a part of what was streamed.
    let probe = ffprobe(
        &s.url(&format!("/replay/{id}/index.m3u8")),
        &["-show_streams", "-show_format"],
    );
    let streams = probe["streams"].as_array().unwrap();
    let mut audio_langs: Vec<String> = streams
        .iter()
        .filter(|st| st["codec_type"] == "audio")
        .map(|st| st["tags"]["language"].as_str().unwrap_or("?").to_string())
        .collect();
    audio_langs.sort();
    assert_eq!(audio_langs, ["cmn", "hak", "yue"], "{probe}");
    assert!(streams.iter().any(|st| st["codec_name"] == "h264"));
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - streamed).abs() <= part + 0.2,
        "ffprobe {duration} s vs {streamed} s streamed"
    );
    // And decodes every dialect of it to the end without an error.
    let out = output_within(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(s.url(&format!("/replay/{id}/audio-hak/index.m3u8")))
            .args(["-f", "null", "-"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A webhook receiver: answers 503 to the first request (to see the retry), then 204;
/// keeps `(event header, signature header, body)` of the requests it accepted.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

fn webhook_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = got.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().take(100).enumerate() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut len, mut event, mut signature) = (0usize, String::new(), String::new());
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                let value = line
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default();
                if lower.starts_with("content-length:") {
                    len = value.parse().unwrap();
                } else if lower.starts_with("x-jiangtang-event:") {
                    event = value;
                } else if lower.starts_with("x-jiangtang-signature:") {
                    signature = value;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = if n == 0 {
                "503 Service Unavailable"
            } else {
                "204 No Content"
            };
            let _ = conn.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
            if n > 0 {
                got2.lock().unwrap().push((event, signature, body));
            }
        }
    });
    (url, got)
}

#[test]
fn a_publisher_that_reconnects_makes_one_recording_with_one_discontinuity_and_webhooks_tell_it() {
    let (hook, got) = webhook_receiver();
    let s = Server::start(&format!(
        "[http]\npublic_url = \"https://live.example.org\"\n\
         [recording]\nwebhook_url = \"{hook}\"\nwebhook_secret = \"s3cret\"\n\
         [lectures]\ngrace_period_s = 4\n"
    ));
    for _ in 0..2 {
        let mut p = ffmpeg_publish_args(&s.rtmp_url("again"), "320x180", 25, 440, &["-t", "5"]);
        assert_eq!(
            p.wait(Duration::from_secs(20)),
            Some(true),
            "ffmpeg published"
        );
    }
    let rec = wait_recording(&s, "again", "the recording complete", |r| {
        r["state"] == "complete"
    });
    let id = rec["id"].as_str().unwrap();
    for rendition in ["video", "audio-cmn"] {
        let vod = get_text(&s.url(&format!("/replay/{id}/{rendition}/index.m3u8")));
        assert_eq!(discontinuities(&vod), 1, "{vod}");
        assert!(vod.ends_with("#EXT-X-ENDLIST\n"));
    }
    assert!(rec["duration_s"].as_f64().unwrap() > 8.0, "{rec}");

    // The platform hears: started, ended, replay ready — in that order, signed, the first
    // one after a retry (the receiver refused it once).
    let events = wait_until(Duration::from_secs(30), "three webhooks", || {
        let g = got.lock().unwrap();
        (g.len() >= 3).then(|| g.clone())
    });
    let names: Vec<&str> = events.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(names, ["lecture.started", "lecture.ended", "replay.ready"]);
    let bodies: Vec<Value> = events
        .iter()
        .map(|(_, _, b)| serde_json::from_slice(b).unwrap())
        .collect();
    for ((event, signature, raw), body) in events.iter().zip(&bodies) {
        assert_eq!(body["event"], event.as_str());
        // The signature is HMAC-SHA256 of the body as sent, checked with openssl.
        let mut mac = Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", "s3cret", "-r"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        mac.stdin.take().unwrap().write_all(raw).unwrap();
        let out = String::from_utf8(mac.wait_with_output().unwrap().stdout).unwrap();
        let hex = out.split_whitespace().next().unwrap();
        assert_eq!(signature, &format!("sha256={hex}"));
    }
    assert_eq!(bodies[0]["lecture"]["name"], "again");
    assert_eq!(bodies[0]["lecture"]["recording"], id);
    assert_eq!(
        bodies[0]["lecture"]["hls"],
        "https://live.example.org/hls/again/index.m3u8"
    );
    let ready = &bodies[2]["recording"];
    assert_eq!(ready["id"], id);
    assert_eq!(ready["state"], "complete");
    assert_eq!(
        ready["hls"],
        format!("https://live.example.org/replay/{id}/index.m3u8")
    );
    assert!(
        s.log().contains("webhook not delivered: answered 503"),
        "{}",
        s.log()
    );
    // Once the lecture is over its state lists the replay.
    let st: Value = serde_json::from_str(&get_text(&s.url("/api/v1/streams/again/state"))).unwrap();
    assert_eq!(st["replays"][0]["id"], id, "{st}");
}

#[test]
fn a_full_disk_fails_the_recording_viewers_keep_watching_and_it_resumes() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs in a mount namespace needs root");
        return;
    }
    let dir = TempDir::new("full");
    let mount = format!(
        "mount -t tmpfs -o size=48m jiangtang-test \"{}\" && exec \"$@\"",
        dir.0.display()
    );
    let s = Server::start_wrapped(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &mount,
            "sh",
        ],
        &format!(
            "[recording]\ndir = \"{}\"\nmin_free_mb = 0\n[lectures]\ngrace_period_s = 3\n",
            dir.0.display()
        ),
    );
    // The tmpfs, seen from outside the relay's namespace.
    let inside = PathBuf::from(format!("/proc/{}/root{}", s.pid(), dir.0.display()));
    let mut publisher = ffmpeg_publish(&s.rtmp_url("full"), "320x180", 25, 440);
    wait_recording(&s, "full", "recording", |r| {
        r["duration_s"].as_f64().is_some_and(|d| d > 2.0)
    });
    assert!(std::fs::read_dir(&inside).unwrap().count() >= 1);
    assert!(
        std::fs::read_dir(&dir.0).unwrap().next().is_none(),
        "the tmpfs is the relay's own"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let viewer = rt.block_on(whep::Viewer::start(s.http, "full"));

    // Fill the disk to the last byte.
    let out = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", inside.join("filler").display()))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"));
    let failed = wait_recording(&s, "full", "the recording failed", |r| {
        r["state"] == "failed"
    });
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("disk") || reason.contains("space"),
        "{reason}"
    );
    assert!(s.log().contains("recording failed"));
    let metrics = get_text(&s.url("/metrics"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("jiangtang_recording_failures_total") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // Viewers do not notice: the live playlist keeps growing, WebRTC keeps delivering.
    let msn = |s: &Server| {
        let pl = get_text(&s.url("/hls/full/video/index.m3u8"));
        let p = m3u8_rs::parse_media_playlist_res(pl.as_bytes()).unwrap();
        p.media_sequence + p.segments.len() as u64
    };
    let (before, frames) = (msn(&s), viewer.video_frames());
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        msn(&s) >= before + 2,
        "live HLS stalled while the disk was full"
    );
    assert!(
        viewer.video_frames() >= frames + 60,
        "WebRTC stalled while the disk was full"
    );

    // Space comes back: the same recording resumes.
    std::fs::remove_file(inside.join("filler")).unwrap();
    let resumed = wait_recording(&s, "full", "recording resumed", |r| {
        r["state"] == "recording"
    });
    assert_eq!(resumed["id"], failed["id"]);
    let at_resume = resumed["duration_s"].as_f64().unwrap();
    wait_recording(&s, "full", "recording after resuming", |r| {
        r["duration_s"]
            .as_f64()
            .is_some_and(|d| d > at_resume + 4.0)
    });
    publisher.stop();
    let done = wait_recording(&s, "full", "the recording complete", |r| {
        r["state"] == "complete"
    });
    let gaps = done["interruptions"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{done}");
    assert!(gaps[0]["to"].is_string());
    let id = done["id"].as_str().unwrap();
    let vod = get_text(&s.url(&format!("/replay/{id}/video/index.m3u8")));
    assert_eq!(discontinuities(&vod), 1, "{vod}");
    let probe = ffprobe(
        &s.url(&format!("/replay/{id}/index.m3u8")),
        &["-show_format"],
    );
    assert!(
        probe["format"]["duration"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 6.0
    );
    drop(viewer);
}

#[test]
fn recordings_are_deleted_by_an_operator_only_and_not_while_live() {
    let s = Server::start(
        "[http]\noperator_token = \"an-operator-token-1234\"\n[lectures]\ngrace_period_s = 2\n",
    );
    let mut p = ffmpeg_publish(&s.rtmp_url("gone"), "320x180", 25, 440);
    let live = wait_recording(&s, "gone", "recording", |r| {
        r["duration_s"].as_f64().is_some_and(|d| d > 2.0)
    });
    let id = live["id"].as_str().unwrap().to_string();
    let url = s.url(&format!("/api/v1/recordings/{id}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let delete = |auth: Option<&str>| {
        rt.block_on(async {
            let mut r = reqwest::Client::new().delete(&url);
            if let Some(a) = auth {
                r = r.bearer_auth(a);
            }
            r.send().await.unwrap().status().as_u16()
        })
    };
    assert_eq!(
        delete(Some("an-operator-token-1234")),
        409,
        "not while it is being written"
    );
    p.stop();
    wait_recording(&s, "gone", "complete", |r| r["state"] == "complete");
    assert_eq!(delete(None), 401);
    assert_eq!(delete(Some("wrong-token-wrong-token")), 401);
    assert_eq!(get(&url).0, 200);
    let status = delete(Some("an-operator-token-1234"));
    assert!(status == 200 || status == 204, "{status}");
    assert_eq!(get(&url).0, 404);
    assert_eq!(get(&s.url(&format!("/replay/{id}/index.m3u8"))).0, 404);
    assert!(recordings(&s, "gone").is_empty());
}
