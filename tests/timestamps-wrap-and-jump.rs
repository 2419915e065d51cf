//! Input timestamps that wrap or jump, end to end: RTMP messages whose 32-bit millisecond
//! timestamps cross 2^32 (a real ffmpeg FLV re-sent by the test's own RTMP client, as ffmpeg
//! itself cannot send timestamps past 2^31), RTMP timestamps jumping forward and back, and
//! MPEG-TS over SRT from ffmpeg whose 33-bit PTS wraps (`-output_ts_offset` just short of
//! 2^33 / 90 kHz). Each lecture is recorded; its replay must list timestamps that only go
//! forward, last as long as what was sent, and decode without an error.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::replay::{Folder, recording_config, wait_recording};
use common::rtmp::RawClient;
use common::*;
use serde_json::Value;

/// One FLV tag: type (8 audio, 9 video, 18 data), timestamp in ms, body.
struct Tag {
    kind: u8,
    ms: u32,
    body: Vec<u8>,
}

/// `seconds` of a 320×180 picture at 25 fps (a keyframe every 2 s) and a 440 Hz tone as
/// AAC, made by ffmpeg as FLV, read back as tags.
fn flv_tags(seconds: u32) -> Vec<Tag> {
    let path = std::env::temp_dir().join(format!(
        "jiangtang-wrap-{}-{seconds}.flv",
        std::process::id()
    ));
    let out = output_within(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &seconds.to_string()])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-g", "50", "-pix_fmt", "yuv420p", "-b:v", "400k"])
            .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2"])
            .arg(&path),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flv = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(&flv[..3], b"FLV");
    let mut at = u32::from_be_bytes(flv[5..9].try_into().unwrap()) as usize + 4;
    let mut tags = Vec::new();
    while at + 11 <= flv.len() {
        let h = &flv[at..at + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body = flv[at + 11..at + 11 + size].to_vec();
        tags.push(Tag {
            kind: h[0] & 0x1f,
            ms,
            body,
        });
        at += 11 + size + 4;
    }
    tags
}

/// Publishes `tags` to `name` over RTMP at their pace, each with timestamp `at(ms)`, then
/// closes the connection.
fn publish_tags(s: &Server, name: &str, tags: &[Tag], at: impl Fn(u32) -> u32) {
    let mut c = RawClient::connect(s.rtmp);
    let answer = String::from_utf8_lossy(&c.publish(name)).to_string();
    assert!(answer.contains("NetStream.Publish.Start"), "{answer}");
    let start = Instant::now();
    for t in tags {
        let due = start + Duration::from_millis(t.ms as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let csid = if t.kind == 8 { 4 } else { 6 };
        c.message(csid, t.kind, 1, at(t.ms), &t.body).unwrap();
    }
    let _ = c.stream.shutdown(std::net::Shutdown::Both);
}

/// Packet times (seconds) of one rendition of a replay, as ffprobe reads them.
fn packet_times(s: &Server, id: &str, rendition: &str) -> Vec<f64> {
    let v: Value = ffprobe(
        &s.url(&format!("/replay/{id}/{rendition}/index.m3u8")),
        &["-show_packets", "-show_entries", "packet=pts_time"],
    );
    v["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pts_time"].as_str()?.parse().ok())
        .collect()
}

/// The lecture's one recording, complete: its packet times go only forward and span about
/// `seconds`, and the whole replay decodes without an error. Returns the recording.
fn check_replay(s: &Server, lecture: &str, seconds: f64, dialect: &str) -> Value {
    let rec = wait_recording(s, lecture, "complete", Duration::from_secs(60));
    let id = rec["id"].as_str().unwrap();
    for rendition in ["video".to_string(), format!("audio-{dialect}")] {
        let t = packet_times(s, id, &rendition);
        assert!(t.len() > 50, "{rendition}: {} packets", t.len());
        let back: Vec<_> = t.windows(2).filter(|w| w[1] <= w[0]).collect();
        assert!(back.is_empty(), "{rendition} goes back: {back:?}");
        let gaps: Vec<_> = t.windows(2).filter(|w| w[1] - w[0] > 0.5).collect();
        assert!(gaps.is_empty(), "{rendition} has gaps: {gaps:?}");
        let span = t.last().unwrap() - t[0];
        assert!(
            (span - seconds).abs() < 1.5,
            "{rendition}: {span} s of {seconds} s sent"
        );
    }
    let out = output_within(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(s.url(&format!("/replay/{id}/index.m3u8")))
            .args(["-map", "0", "-f", "null", "-"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rec
}

#[test]
fn rtmp_timestamps_crossing_2_32_ms_play_through() {
    let dir = Folder::new("rtmp-wrap");
    let s = Server::start(&recording_config(&dir));
    let tags = flv_tags(10);
    // The first tag 4 s before the 32-bit wrap: the wrap comes 4 s in.
    let base = u32::MAX - 3_999;
    publish_tags(&s, "wrap32", &tags, |ms| base.wrapping_add(ms));
    check_replay(&s, "wrap32", 10.0, "cmn");
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

#[test]
fn rtmp_timestamps_jumping_forward_and_back_play_on() {
    let dir = Folder::new("rtmp-jump");
    let s = Server::start(&recording_config(&dir));
    let tags = flv_tags(12);
    // From 4 s the encoder's clock is 10 minutes ahead; from 8 s it is 1 minute behind
    // where it started (an encoder restart, a splice).
    publish_tags(&s, "jumpy", &tags, |ms| match ms {
        0..4_000 => 100_000 + ms,
        4_000..8_000 => 700_000 + ms,
        _ => 40_000 + ms,
    });
    let rec = check_replay(&s, "jumpy", 12.0, "cmn");
    assert!(rec["duration_s"].as_f64().unwrap() < 14.0, "{rec}");
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

#[test]
fn srt_pts_crossing_2_33_play_through() {
    let dir = Folder::new("ts-wrap");
    let s = Server::start(&recording_config(&dir));
    // 2^33 / 90 kHz = 95443.717 s: the PTS wraps about 4 s in.
    let mut enc = Proc(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", "10"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-g", "50", "-pix_fmt", "yuv420p", "-b:v", "400k"])
            .args(["-c:a", "aac", "-b:a", "64k", "-ac", "1"])
            .args(["-metadata:s:a:0", "language=yue"])
            .args(["-output_ts_offset", "95439.7"])
            .args(["-f", "mpegts", &srt_url(&s, "publish:wrap33", "")])
            .spawn()
            .expect("ffmpeg"),
    );
    assert_eq!(
        enc.wait(Duration::from_secs(40)),
        Some(true),
        "ffmpeg published"
    );
    check_replay(&s, "wrap33", 10.0, "yue");
    assert!(!s.log().contains("panicked"), "{}", s.log());
}
