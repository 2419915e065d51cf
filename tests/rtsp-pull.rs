//! RTSP pull: cameras in the config are pulled from a real RTSP server (gst-rtsp-server,
//! `tests/support/rtsp_camera.py`) into lectures: H.264 + AAC over TCP and UDP, G.711
//! transcoded to AAC, basic and digest auth (and a wrong password refused), reconnecting
//! after the camera goes away, pulling on demand only while watched, and servers that
//! answer garbage or enormous headers failing cleanly while other lectures go on.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A local RTSP camera on a port of its own; stopped on drop.
struct Camera {
    _proc: Proc,
    port: u16,
}

impl Camera {
    fn start(args: &[&str]) -> Camera {
        Camera::start_on(0, args)
    }

    fn start_on(port: u16, args: &[&str]) -> Camera {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_camera.py");
        // Debian's Python, which has the GStreamer bindings (scripts/setup.sh installs them).
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with gst-rtsp-server (installed by scripts/setup.sh)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("rtsp listening on ")
            .unwrap_or_else(|| panic!("camera did not start: {line:?}"))
            .parse()
            .unwrap();
        Camera {
            _proc: Proc(child),
            port,
        }
    }

    fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }
}

fn camera_config(lecture: &str, url: &str, extra: &str) -> String {
    format!("[[camera]]\nlecture = \"{lecture}\"\nurl = \"{url}\"\n{extra}\n")
}

const FAST: &str = "[rtsp]\nmin_backoff_ms = 300\nmax_backoff_ms = 1000\nstep_timeout_ms = 3000\nstall_timeout_ms = 3000\n";

fn api(s: &Server, name: &str) -> serde_json::Value {
    serde_json::from_str(&get_text(&s.url(&format!("/api/v1/streams/{name}")))).unwrap()
}

#[test]
fn camera_with_aac_becomes_a_lecture_over_tcp_and_udp() {
    let tcp_cam = Camera::start(&["--audio", "aac", "--freq", "660"]);
    let udp_cam = Camera::start(&["--audio", "aac", "--freq", "880", "--size", "640x360"]);
    let s = Server::start(&format!(
        "{FAST}{}{}",
        camera_config("hall-cam", &tcp_cam.url(), "language = \"yue\""),
        camera_config("yard-cam", &udp_cam.url(), "transport = \"udp\""),
    ));
    for (name, hz, width, lang) in [
        ("hall-cam", 660.0, 320, "yue"),
        ("yard-cam", 880.0, 640, "cmn"),
    ] {
        wait_for_segments(&s, name, "video", 3);
        wait_for_segments(&s, name, &format!("audio-{lang}"), 3);
        let probe = ffprobe(&s.url(&format!("/hls/{name}/index.m3u8")), &[]);
        let streams = probe["streams"].as_array().unwrap();
        assert!(
            streams
                .iter()
                .any(|x| x["codec_name"] == "h264" && x["width"] == width),
            "{name}: {probe}"
        );
        let pcm = decode_pcm(&s.url(&format!("/hls/{name}/audio-{lang}/index.m3u8")), 2.0);
        let heard = tone_hz(&pcm);
        assert!((heard - hz).abs() < 15.0, "{name}: heard {heard} Hz");
        let a = api(&s, name);
        assert_eq!(a["publisher"]["protocol"], "rtsp");
        assert_eq!(a["input"]["keyframe_interval_s"], 2.0, "{a}");
    }
}

#[test]
fn b_frames_from_a_camera_get_decode_times() {
    let cam = Camera::start(&["--audio", "none", "--bframes", "2"]);
    let s = Server::start(&format!(
        "{FAST}{}",
        camera_config("bf-cam", &cam.url(), "")
    ));
    let pl = wait_for_segments(&s, "bf-cam", "video", 4);
    // The newest whole segment, decoded on its own with the init segment.
    let seg = pl.segments.last().unwrap();
    let map = pl
        .segments
        .iter()
        .find_map(|x| x.map.as_ref())
        .expect("EXT-X-MAP");
    let (_, _, init) = get(&s.url(&format!("/hls/bf-cam/video/{}", map.uri)));
    let (_, _, media) = get(&s.url(&format!("/hls/bf-cam/video/{}", seg.uri)));
    let file = write_temp("bf-cam-last.mp4", &[&init, &media]);
    let probe = ffprobe(file.to_str().unwrap(), &["-show_frames"]);
    let frames = probe["frames"].as_array().unwrap();
    let b = frames.iter().filter(|f| f["pict_type"] == "B").count();
    assert!(b > 10, "{b} B-frames of {}", frames.len());
    // Every frame of the segment decodes: the decode times let the decoder reorder.
    let expected = seg.duration as f64 * 25.0;
    assert!(
        (frames.len() as f64 - expected).abs() <= 1.0,
        "{} frames decoded for {} s",
        frames.len(),
        seg.duration
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn g711_audio_is_transcoded_to_aac() {
    let cam = Camera::start(&["--audio", "pcmu", "--freq", "440"]);
    let s = Server::start(&format!(
        "{FAST}{}",
        camera_config("pcmu-cam", &cam.url(), "")
    ));
    wait_for_segments(&s, "pcmu-cam", "audio-cmn", 3);
    let master = get_text(&s.url("/hls/pcmu-cam/index.m3u8"));
    assert!(master.contains("mp4a.40.2"), "{master}");
    let pcm = decode_pcm(&s.url("/hls/pcmu-cam/audio-cmn/index.m3u8"), 2.0);
    let heard = tone_hz(&pcm);
    assert!((heard - 440.0).abs() < 15.0, "heard {heard} Hz");
}

#[test]
fn digest_and_basic_auth_and_a_wrong_password() {
    let digest = Camera::start(&[
        "--user",
        "admin",
        "--password",
        "s3cret",
        "--auth",
        "digest",
    ]);
    let basic = Camera::start(&["--user", "op", "--password", "pa:ss", "--auth", "basic"]);
    let wrong = Camera::start(&["--user", "admin", "--password", "right", "--auth", "digest"]);
    let s = Server::start(&format!(
        "{FAST}{}{}{}",
        camera_config(
            "digest-cam",
            &format!("rtsp://admin:s3cret@127.0.0.1:{}/cam", digest.port),
            ""
        ),
        camera_config(
            "basic-cam",
            &basic.url(),
            "username = \"op\"\npassword = \"pa:ss\""
        ),
        camera_config(
            "wrong-cam",
            &format!("rtsp://admin:nope@127.0.0.1:{}/cam", wrong.port),
            ""
        ),
    ));
    wait_for_segments(&s, "digest-cam", "video", 2);
    wait_for_segments(&s, "basic-cam", "video", 2);
    wait_until(Duration::from_secs(15), "the refusal in the log", || {
        let log = s.log();
        (log.contains("wrong-cam") && log.contains("401")).then_some(())
    });
    let (status, _, _) = get(&s.url("/hls/wrong-cam/index.m3u8"));
    assert_eq!(status, 404, "a camera that refused us is no lecture");
    // Credentials never reach the log.
    let log = s.log();
    assert!(!log.contains("s3cret") && !log.contains("nope"), "{log}");
}

#[test]
fn reconnects_after_the_camera_restarts() {
    let cam = Camera::start(&["--audio", "aac"]);
    let port = cam.port;
    let s = Server::start(&format!(
        "{FAST}{}",
        camera_config("again-cam", &cam.url(), "")
    ));
    let before = wait_for_segments(&s, "again-cam", "video", 2);
    let first_msn = before.media_sequence + before.segments.len() as u64;
    drop(cam);
    wait_until(Duration::from_secs(15), "the lecture to notice", || {
        (api(&s, "again-cam")["status"] == "reconnecting").then_some(())
    });
    let _cam = Camera::start_on(port, &["--audio", "aac"]);
    let after = wait_until(
        Duration::from_secs(30),
        "segments after the restart",
        || {
            let pl = wait_for_segments(&s, "again-cam", "video", 1);
            (pl.media_sequence + pl.segments.len() as u64 >= first_msn + 3).then_some(pl)
        },
    );
    assert!(
        after.segments.iter().any(|x| x.discontinuity),
        "the same playlist continues after a discontinuity"
    );
    assert_eq!(api(&s, "again-cam")["status"], "live");
    assert_eq!(api(&s, "again-cam")["sessions"], 2);
}

#[test]
fn a_camera_that_stops_sending_but_keeps_the_session_is_reconnected() {
    // Every session the camera serves sends 4 s of media, then nothing while the RTSP
    // connection stays up (a hung encoder).
    let cam = Camera::start(&["--audio", "pcmu", "--freeze-after", "4"]);
    let s = Server::start(&format!(
        "{FAST}{}",
        camera_config("hung-cam", &cam.url(), "")
    ));
    wait_for_segments(&s, "hung-cam", "video", 1);
    wait_until(Duration::from_secs(20), "the stall to be noticed", || {
        s.log()
            .contains("no frame from the camera for")
            .then_some(())
    });
    wait_until(Duration::from_secs(20), "a new camera session", || {
        (api(&s, "hung-cam")["sessions"].as_u64() >= Some(2)).then_some(())
    });
}

#[test]
fn on_demand_camera_runs_only_while_watched() {
    let cam = Camera::start(&["--audio", "none"]);
    let s = Server::start(&format!(
        "{FAST}idle_stop_s = 4\n[lectures]\ngrace_period_s = 2\n{}",
        camera_config("lazy-cam", &cam.url(), "pull = \"on_demand\"")
    ));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !s.log().contains("camera connected"),
        "pulled before anybody asked"
    );
    // A player asks: the first request finds nothing yet, and starts the camera.
    let (status, _, _) = get(&s.url("/hls/lazy-cam/index.m3u8"));
    assert_eq!(status, 404);
    // A player keeps asking while it watches.
    wait_until(Duration::from_secs(20), "the camera on demand", || {
        let (status, _, _) = get(&s.url("/hls/lazy-cam/video/index.m3u8"));
        std::thread::sleep(Duration::from_millis(300));
        (status == 200).then_some(())
    });
    // Nobody asks any more: it stops, and the lecture ends after the grace period.
    wait_until(Duration::from_secs(20), "the camera to stop", || {
        s.log()
            .contains("camera session ended: no longer wanted")
            .then_some(())
    });
    wait_until(Duration::from_secs(10), "the lecture to end", || {
        (api(&s, "lazy-cam")["status"] == "ended").then_some(())
    });
}

/// A TCP server on loopback that answers every connection with `reply` (then holds it).
fn bad_server(reply: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = std::io::Read::read(&mut c, &mut buf);
                let _ = c.write_all(&reply);
                std::thread::sleep(Duration::from_secs(30));
            });
        }
    });
    port
}

#[test]
fn garbage_and_enormous_headers_fail_cleanly_and_alone() {
    let good = Camera::start(&["--audio", "aac"]);
    let junk = bad_server((0..4000u32).map(|i| (i * 31 + 7) as u8).collect());
    let http =
        bad_server(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html></html>".to_vec());
    let mut huge = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let huge = bad_server(huge);
    let silent = bad_server(Vec::new());
    let s = Server::start(&format!(
        "{FAST}{}{}{}{}{}",
        camera_config("good-cam", &good.url(), ""),
        camera_config("junk-cam", &format!("rtsp://127.0.0.1:{junk}/x"), ""),
        camera_config("http-cam", &format!("rtsp://127.0.0.1:{http}/x"), ""),
        camera_config("huge-cam", &format!("rtsp://127.0.0.1:{huge}/x"), ""),
        camera_config("silent-cam", &format!("rtsp://127.0.0.1:{silent}/x"), ""),
    ));
    let before = wait_for_segments(&s, "good-cam", "video", 1);
    let before = before.media_sequence + before.segments.len() as u64;
    wait_until(Duration::from_secs(20), "every bad camera's error", || {
        let log = s.log();
        ["junk-cam", "http-cam", "huge-cam", "silent-cam"]
            .iter()
            .all(|c| log.lines().any(|l| l.contains(c) && l.contains("retrying")))
            .then_some(())
    });
    let log = s.log();
    for l in log.lines().filter(|l| l.contains("retrying")) {
        eprintln!("{l}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("silent-cam") && l.contains("no answer to DESCRIBE")),
        "{log}"
    );
    // The good camera went on, and the relay stayed small.
    let after = wait_until(Duration::from_secs(10), "the good camera going on", || {
        let pl = wait_for_segments(&s, "good-cam", "video", 1);
        (pl.media_sequence + pl.segments.len() as u64 > before + 1).then_some(pl)
    });
    assert_eq!(api(&s, "good-cam")["status"], "live", "{}", s.log());
    let _ = after;
    let mut s = s;
    assert!(s.alive());
    assert!(s.rss_mib() < 400.0, "RSS {} MiB", s.rss_mib());
}
