//! An encoder whose network dropped comes back before its old connection has timed out: the
//! old session, silent for `lectures.stalled_publisher_ms`, yields the lecture to the new
//! connection (right key only), over RTMP and over SRT, and the lecture plays on. A publisher
//! that is sending is never displaced; a lecture anybody may publish is taken over only from
//! the stalled publisher's own host. The old encoder is "cut off" by stopping its process
//! (SIGSTOP: not even libsrt's keepalives leave), and the relay's idle timeouts are a minute,
//! so without the takeover the new connection would be refused for that long.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::*;

const KEY: &str = "hall-key-1234";

fn config() -> String {
    format!(
        "[rtmp]\nidle_timeout_ms = 60000\n[srt]\nidle_timeout_ms = 60000\n\
         [lectures]\nstalled_publisher_ms = 2000\n\
         [[lecture]]\nname = \"hall\"\npublish_key = \"{KEY}\"\n"
    )
}

/// When the lecture's current publishing session began (the API's `publisher.since`).
fn publisher_since(s: &Server) -> Option<String> {
    let (status, _, body) = get(&s.url("/api/v1/streams/hall"));
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    (v["status"] == "live")
        .then(|| v["publisher"]["since"].as_str().map(str::to_string))
        .flatten()
}

/// The API's `input.silent_ms` of the lecture.
fn silent_ms(s: &Server) -> Option<u64> {
    let api: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/hall"))).unwrap();
    api["input"]["silent_ms"].as_u64()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig}");
}

/// The lecture's newest video media sequence number.
fn newest_segment(s: &Server) -> u64 {
    let text = get_text(&s.url("/hls/hall/video/index.m3u8"));
    let first: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    first + text.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64
}

#[test]
fn an_encoder_back_over_rtmp_takes_its_lecture_from_its_stalled_connection() {
    let s = Server::start(&config());
    let url = s.rtmp_url(&format!("hall?key={KEY}"));
    let mut first = ffmpeg_publish(&url, "320x180", 25, 440);
    wait_for_segments(&s, "hall", "video", 2);
    let since = publisher_since(&s).expect("live");
    assert!(silent_ms(&s).expect("silent_ms") < 2000, "sending");

    // While the first encoder sends, a second one is refused and the first keeps the hall.
    let mut second = ffmpeg_publish(&url, "320x180", 25, 660);
    assert_eq!(second.wait(Duration::from_secs(20)), Some(false));
    assert_eq!(publisher_since(&s).as_deref(), Some(since.as_str()));

    // The first encoder's network is gone (its process stopped, its TCP connection open):
    // the operator sees it go silent.
    signal(&first.0, "-STOP");
    std::thread::sleep(Duration::from_secs(3));
    let silent = silent_ms(&s).expect("silent_ms");
    assert!(silent >= 2000, "{silent} ms");
    // A stranger without the key gets nothing from the silence.
    let mut stranger = ffmpeg_publish(&s.rtmp_url("hall?key=not-the-key-99"), "320x180", 25, 660);
    assert_eq!(stranger.wait(Duration::from_secs(20)), Some(false));
    assert_eq!(publisher_since(&s).as_deref(), Some(since.as_str()));

    // The encoder comes back on a new connection and takes the hall over at once.
    let before = newest_segment(&s);
    let back = ffmpeg_publish(&url, "320x180", 25, 660);
    let new_since = wait_until(Duration::from_secs(15), "the new session", || {
        publisher_since(&s).filter(|x| *x != since)
    });
    assert!(new_since > since);
    assert!(
        s.log().contains("a new publisher takes the lecture over"),
        "{}",
        s.log()
    );
    wait_until(Duration::from_secs(20), "the lecture playing on", || {
        (newest_segment(&s) >= before + 2).then_some(())
    });

    // The old connection, back to life, is closed rather than mixed in.
    signal(&first.0, "-CONT");
    assert_eq!(first.wait(Duration::from_secs(20)), Some(false));
    still_the_new_publisher(&s, &new_since, back);
}

/// The lecture is still `back`'s session (begun at `since`), and `back` still publishing.
fn still_the_new_publisher(s: &Server, since: &str, mut back: Proc) {
    assert_eq!(publisher_since(s).as_deref(), Some(since));
    assert_eq!(
        back.wait(Duration::from_millis(100)),
        None,
        "still publishing"
    );
    back.stop();
}

#[test]
fn an_encoder_back_over_srt_takes_its_lecture_from_its_stalled_connection() {
    let s = Server::start(&config());
    let url = srt_url(&s, &format!("publish:hall:{KEY}"), "");
    let mut first = Proc(
        ffmpeg_srt(&url, &[("cmn", 440)], &[])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_segments(&s, "hall", "video", 2);
    let since = publisher_since(&s).expect("live");

    signal(&first.0, "-STOP");
    std::thread::sleep(Duration::from_secs(3));
    let before = newest_segment(&s);
    let back = Proc(
        ffmpeg_srt(&url, &[("cmn", 660)], &[])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let new_since = wait_until(Duration::from_secs(15), "the new session", || {
        publisher_since(&s).filter(|x| *x != since)
    });
    wait_until(Duration::from_secs(20), "the lecture playing on", || {
        (newest_segment(&s) >= before + 2).then_some(())
    });
    signal(&first.0, "-CONT");
    first.stop();
    still_the_new_publisher(&s, &new_since, back);
}

#[test]
fn an_encoder_back_takes_a_lecture_anyone_may_publish_from_its_own_stalled_connection() {
    // No key: only a publisher from the stalled one's host takes over (here both are
    // 127.0.0.1; another host waits for the old connection to time out, a hub unit test).
    let s = Server::start(
        "[rtmp]\nidle_timeout_ms = 60000\n\
         [lectures]\nallow_unconfigured = true\nstalled_publisher_ms = 2000\n",
    );
    let url = s.rtmp_url("hall");
    let mut first = ffmpeg_publish(&url, "320x180", 25, 440);
    wait_for_segments(&s, "hall", "video", 2);
    let since = publisher_since(&s).expect("live");
    signal(&first.0, "-STOP");
    std::thread::sleep(Duration::from_secs(3));
    let before = newest_segment(&s);
    let back = ffmpeg_publish(&url, "320x180", 25, 660);
    let new_since = wait_until(Duration::from_secs(15), "the new session", || {
        publisher_since(&s).filter(|x| *x != since)
    });
    wait_until(Duration::from_secs(20), "the lecture playing on", || {
        (newest_segment(&s) >= before + 2).then_some(())
    });
    signal(&first.0, "-CONT");
    assert_eq!(first.wait(Duration::from_secs(20)), Some(false));
    still_the_new_publisher(&s, &new_since, back);
}
