//! WHIP in, with Debian's headless Chromium as the publisher: a browser's camera and
//! microphone become a lecture (H.264 as sent, Opus transcoded to AAC, keyframes asked for
//! every segment); an interpreter on the `/interpret/NAME` page adds a dialect to a live RTMP
//! lecture, heard in HLS and over WebRTC, muted, and continued as silence after they stop;
//! and bad offers, keys and lectures get clear HTTP errors.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn node(script: &str, args: &[&str], timeout: Duration) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/node has no node_modules: run scripts/test.sh, which installs them"
    );
    let out = output_within(
        Command::new("node").arg(dir.join(script)).args(args),
        timeout,
    );
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script}: no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    v
}

fn shots() -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

fn api(s: &Server, name: &str) -> Value {
    serde_json::from_str(&get_text(&s.url(&format!("/api/v1/streams/{name}")))).unwrap()
}

/// The newest segment of a rendition with its init segment, as a file ffmpeg can read.
fn last_segment(s: &Server, stream: &str, rendition: &str, pl: &m3u8_rs::MediaPlaylist) -> String {
    let base = format!("/hls/{stream}/{rendition}/");
    let seg = pl.segments.last().unwrap();
    let map = seg
        .map
        .as_ref()
        .or_else(|| pl.segments.iter().rev().find_map(|x| x.map.as_ref()))
        .expect("EXT-X-MAP");
    let (_, _, init) = get(&s.url(&format!("{base}{}", map.uri)));
    let (_, _, media) = get(&s.url(&format!("{base}{}", seg.uri)));
    write_temp(&format!("{stream}-{rendition}-last.mp4"), &[&init, &media])
        .display()
        .to_string()
}

fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
}

#[test]
fn a_browser_publishes_a_lecture_over_whip() {
    let s = Server::start("[[lecture]]\nname = \"webcam\"\npublish_key = \"hall-key-123\"\n");
    let _browser = browser_lock();
    let server = format!("http://{}", s.http);
    let publisher = std::thread::spawn(move || {
        node(
            "whip.mjs",
            &["publish", &server, "webcam", "hall-key-123", "14"],
            Duration::from_secs(90),
        )
    });
    let video = wait_for_segments(&s, "webcam", "video", 4);
    let audio = wait_for_segments(&s, "webcam", "audio-cmn", 4);
    // Keyframes asked for every segment: segments of about the 2 s target, none cut
    // without a keyframe (the packager would have to cut at 2.5 s).
    for seg in video.segments.iter().skip(1) {
        assert!(
            (1.9..2.4).contains(&seg.duration),
            "segment of {} s: {:?}",
            seg.duration,
            video
                .segments
                .iter()
                .map(|x| x.duration)
                .collect::<Vec<_>>()
        );
    }
    assert!(!s.log().contains("keyframes are more than"), "{}", s.log());
    let probe = ffprobe(&s.url("/hls/webcam/index.m3u8"), &[]);
    let streams = probe["streams"].as_array().unwrap();
    assert!(
        streams
            .iter()
            .any(|x| x["codec_name"] == "h264" && x["width"] == 640),
        "{probe}"
    );
    assert!(
        streams
            .iter()
            .any(|x| x["codec_name"] == "aac" && x["sample_rate"] == "48000"),
        "{probe}"
    );
    // Audio and video line up segment by segment (sender reports put both on one clock).
    for a in &audio.segments {
        let msn = audio.media_sequence
            + audio.segments.iter().position(|x| x.uri == a.uri).unwrap() as u64;
        if let Some(i) = msn.checked_sub(video.media_sequence).map(|i| i as usize)
            && let Some(v) = video.segments.get(i)
        {
            assert!(
                (v.duration - a.duration).abs() < 0.05,
                "segment {msn}: video {} audio {}",
                v.duration,
                a.duration
            );
        }
    }
    let a = api(&s, "webcam");
    assert_eq!(a["publisher"]["protocol"], "whip");
    assert!(
        a["input"]["transport"]["packets_received"]
            .as_u64()
            .unwrap()
            > 100,
        "{a}"
    );
    let r = publisher.join().unwrap();
    assert_eq!(r["status"], 201, "{r}");
    assert!(r["location"].as_str().unwrap().starts_with("/whip/webcam/"));
    assert!(r["etag"].is_string());
    assert_eq!(r["state"], "connected");
    assert_eq!(r["deleteStatus"], 200);
    // DELETE ended the session: the lecture is reconnecting, waiting for its publisher.
    wait_until(Duration::from_secs(10), "the publisher to be gone", || {
        (api(&s, "webcam")["status"] == "reconnecting").then_some(())
    });
}

#[test]
fn an_interpreter_adds_a_dialect_to_a_live_lecture() {
    let s = Server::start(
        "[[lecture]]\nname = \"xihe\"\npublish_key = \"hall-key-123\"\nlanguage = \"cmn\"\n",
    );
    let _lecture = ffmpeg_publish(&s.rtmp_url("xihe?key=hall-key-123"), "320x180", 25, 440);
    wait_for_segments(&s, "xihe", "video", 2);
    // The interpreter's microphone: a 660 Hz tone.
    let wav = std::env::temp_dir().join(format!("jt-{}-interpreter.wav", std::process::id()));
    let ok = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("sine=frequency=660:sample_rate=48000:duration=60")
        .arg(&wav)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let _browser = browser_lock();
    let server = format!("http://{}", s.http);
    let (srv, w, sh) = (server.clone(), wav.display().to_string(), shots());
    let interpreter = std::thread::spawn(move || {
        node(
            "whip.mjs",
            &[
                "interpret",
                &srv,
                "xihe",
                "yue",
                "hall-key-123",
                "16",
                &w,
                &sh,
            ],
            Duration::from_secs(120),
        )
    });
    wait_until(Duration::from_secs(30), "the interpreter on air", || {
        let a = api(&s, "xihe");
        (a["contributors"] == serde_json::json!(["yue"])).then_some(())
    });
    wait_until(
        Duration::from_secs(10),
        "粤语 in the multivariant playlist",
        || {
            get_text(&s.url("/hls/xihe/index.m3u8"))
                .contains("NAME=\"粤语\",LANGUAGE=\"yue\"")
                .then_some(())
        },
    );
    // Long enough on air that the live edge a player starts from is all interpretation.
    std::thread::sleep(Duration::from_secs(7));
    let pcm = decode_pcm(&s.url("/hls/xihe/audio-yue/index.m3u8"), 3.0);
    let heard = tone_hz(&pcm[pcm.len() / 2..]);
    assert!(
        (heard - 660.0).abs() < 20.0,
        "粤语 in HLS: heard {heard} Hz"
    );
    // Its level is in the API, as the hall's.
    let yue_level = api(&s, "xihe")["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["language"] == "yue")
        .map(|t| (t["level"]["rms_db"].as_f64(), t["contributed"].clone()))
        .unwrap();
    assert!(yue_level.0.is_some_and(|db| db > -40.0), "{yue_level:?}");
    assert_eq!(yue_level.1, true);
    let main = tone_hz(&decode_pcm(&s.url("/hls/xihe/audio-cmn/index.m3u8"), 2.0));
    assert!((main - 440.0).abs() < 15.0, "普通话 unchanged: {main} Hz");
    // A WebRTC viewer who picks 粤语 hears the interpreter.
    let whep = node(
        "whep-play.mjs",
        &[&server, "xihe", "yue", "", "4", &shots()],
        Duration::from_secs(90),
    );
    eprintln!(
        "WHEP 粤语: {} Hz at the start, {} Hz 4 s later",
        whep["hzBefore"], whep["hzEnd"]
    );
    let whep_hz = whep["hzEnd"].as_f64().unwrap();
    assert!(
        (whep_hz - 660.0).abs() < 20.0,
        "粤语 over WebRTC: {whep_hz} Hz: {whep}\n{}",
        s.log()
            .lines()
            .filter(|l| l.contains("opus") || l.contains("yue") || l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every dialect keeps the video's segments.
    let v = wait_for_segments(&s, "xihe", "video", 1);
    let y = wait_for_segments(&s, "xihe", "audio-yue", 1);
    let last = |p: &m3u8_rs::MediaPlaylist| p.media_sequence + p.segments.len() as u64;
    assert!(
        last(&v).abs_diff(last(&y)) <= 1,
        "video {} vs 粤语 {}",
        last(&v),
        last(&y)
    );

    let r = interpreter.join().unwrap();
    assert_eq!(r["dialects"][1], "粤语", "{r}");
    assert!(r["levelLive"].as_f64().unwrap() > 0.01, "meter: {r}");
    assert_eq!(r["stateMuted"], "muted");
    assert_eq!(r["levelMuted"], 0.0);
    assert_eq!(r["stateEnd"], "live");
    assert_eq!(r["stateStopped"], "idle");

    // The interpreter left: 粤语 goes on, as silence, in step with the lecture.
    wait_until(Duration::from_secs(10), "the interpreter gone", || {
        (api(&s, "xihe")["contributors"] == serde_json::json!([])).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    let pl = wait_for_segments(&s, "xihe", "audio-yue", 1);
    let before = last(&pl);
    let quiet = decode_pcm(&last_segment(&s, "xihe", "audio-yue", &pl), 2.0);
    assert!(
        rms(&quiet) < 50.0,
        "silence after the interpreter left: RMS {}",
        rms(&quiet)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(last(&wait_for_segments(&s, "xihe", "audio-yue", 1)) > before);
    assert!(get_text(&s.url("/hls/xihe/index.m3u8")).contains("LANGUAGE=\"yue\""));
    let _ = std::fs::remove_file(wav);
}

/// POSTs an offer to `/whip/STREAM?QUERY` with `key` as the bearer token.
fn whip_post(
    s: &Server,
    path: &str,
    key: Option<&str>,
    content_type: &str,
    sdp: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .post(s.url(path))
            .header("content-type", content_type)
            .body(sdp.to_string());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
            headers,
        )
    })
}

/// An offer from a client (str0m) that can send only the codecs named.
fn offer(audio: &str, video: &str) -> String {
    let mut b = str0m::Rtc::builder().clear_codecs();
    for c in [audio, video] {
        b = match c {
            "opus" => b.enable_opus(true, false),
            "PCMU" => b.enable_pcmu(true, false),
            "H264" => b.enable_h264(true),
            "VP8" => b.enable_vp8(true),
            other => panic!("{other}"),
        };
    }
    let mut rtc = b.build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    api.add_media(
        str0m::media::MediaKind::Video,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

#[test]
fn bad_offers_keys_and_lectures_get_clear_errors() {
    let s = Server::start("[[lecture]]\nname = \"keyed\"\npublish_key = \"hall-key-123\"\n");
    let good = offer("opus", "H264");
    let sdp = "application/sdp";
    let (st, body, h) = whip_post(&s, "/whip/keyed", None, sdp, &good);
    assert_eq!(st, 401, "{body}");
    assert_eq!(h["www-authenticate"], "Bearer");
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let (st, _, _) = whip_post(&s, "/whip/keyed", Some("wrong-key-123"), sdp, &good);
    assert_eq!(st, 401);
    let (st, body, _) = whip_post(&s, "/whip/keyed", Some("hall-key-123"), "text/plain", &good);
    assert_eq!(st, 415, "{body}");
    let (st, body, _) = whip_post(
        &s,
        "/whip/keyed",
        Some("hall-key-123"),
        sdp,
        "v=0\r\nthis is not sdp",
    );
    assert_eq!(st, 400, "{body}");
    let (st, body, _) = whip_post(
        &s,
        "/whip/keyed",
        Some("hall-key-123"),
        sdp,
        &offer("PCMU", "VP8"),
    );
    assert_eq!(st, 406, "{body}");
    assert!(body["error"].as_str().unwrap().contains("H.264"), "{body}");
    // Far more media sections than a publisher needs.
    let many = {
        let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
        let mut api = rtc.sdp_api();
        for _ in 0..40 {
            api.add_media(
                str0m::media::MediaKind::Audio,
                str0m::media::Direction::SendOnly,
                None,
                None,
                None,
            );
        }
        api.apply().unwrap().0.to_sdp_string()
    };
    let (st, body, _) = whip_post(&s, "/whip/keyed", Some("hall-key-123"), sdp, &many);
    assert_eq!(st, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("40 m-lines"),
        "{body}"
    );
    // An interpreter needs a live lecture.
    let (st, body, _) = whip_post(
        &s,
        "/whip/keyed?lang=yue",
        Some("hall-key-123"),
        sdp,
        &offer("opus", "H264"),
    );
    assert_eq!(st, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not live"),
        "{body}"
    );
    let (st, body, _) = whip_post(
        &s,
        "/whip/keyed?lang=not-a%20tag",
        Some("hall-key-123"),
        sdp,
        &good,
    );
    assert_eq!(st, 400, "{body}");
    // With the lecture live (RTMP), its own dialect cannot be "interpreted" over it.
    let _p = ffmpeg_publish(&s.rtmp_url("keyed?key=hall-key-123"), "160x90", 10, 440);
    wait_for_segments(&s, "keyed", "audio-cmn", 1);
    let (st, body, _) = whip_post(
        &s,
        "/whip/keyed?lang=cmn",
        Some("hall-key-123"),
        sdp,
        &offer("opus", "H264"),
    );
    assert_eq!(st, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already carries"),
        "{body}"
    );
    // A second source for a live lecture.
    let (st, body, _) = whip_post(&s, "/whip/keyed", Some("hall-key-123"), sdp, &good);
    assert_eq!(st, 409, "{body}");
    // An interpreter without Opus.
    let (st, body, _) = whip_post(
        &s,
        "/whip/keyed?lang=yue",
        Some("hall-key-123"),
        sdp,
        &offer("PCMU", "H264"),
    );
    assert_eq!(st, 406, "{body}");
    // A good interpreter offer is answered; its session can be ended.
    let (st, body, h) = whip_post(
        &s,
        "/whip/keyed?lang=yue",
        Some("hall-key-123"),
        sdp,
        &offer("opus", "H264"),
    );
    assert_eq!(st, 201, "{body}");
    assert_eq!(h["content-type"], "application/sdp");
    let location = h["location"].to_str().unwrap().to_string();
    let (st, _, _) = send("DELETE", &s.url(&location), None, b"");
    assert_eq!(st, 200);
    let (st, _, _) = send("DELETE", &s.url(&location), None, b"");
    assert_eq!(st, 404);
    // Every refusal is in the log with its reason, and the relay is fine.
    let log = s.log();
    assert!(log.contains("WHIP offer refused"), "{log}");
    let mut s = s;
    assert!(s.alive());
}
