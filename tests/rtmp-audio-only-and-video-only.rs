//! Lectures without video (a radio-style talk) or without audio still play.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn ffmpeg(args: &[&str], url: &str) -> Proc {
    Proc(
        Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-re"])
            .args(args)
            .args(["-f", "flv", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg"),
    )
}

#[test]
fn audio_only_lecture_plays() {
    let s = Server::start("");
    let _p = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=660:sample_rate=44100",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
        ],
        &s.rtmp_url("radio?lang=hak"),
    );
    wait_for_segments(&s, "radio", "audio-hak", 3);
    let master =
        m3u8_rs::parse_master_playlist_res(get_text(&s.url("/hls/radio/index.m3u8")).as_bytes())
            .unwrap();
    assert_eq!(master.variants.len(), 1);
    assert_eq!(master.variants[0].uri, "audio-hak/index.m3u8");
    assert_eq!(master.variants[0].codecs.as_deref(), Some("mp4a.40.2"));
    assert!(master.variants[0].resolution.is_none());
    let pl = wait_for_segments(&s, "radio", "audio-hak", 3);
    for seg in &pl.segments {
        assert!((seg.duration - 2.0).abs() < 0.05, "{}", seg.duration);
    }
    let hz = tone_hz(&decode_pcm(&s.url("/hls/radio/index.m3u8"), 2.0));
    assert!((hz - 660.0).abs() < 15.0, "heard {hz}");
}

#[test]
fn video_only_lecture_plays() {
    let s = Server::start("");
    let _p = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=25",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "50",
            "-pix_fmt",
            "yuv420p",
        ],
        &s.rtmp_url("silent"),
    );
    wait_for_segments(&s, "silent", "video", 3);
    let master = get_text(&s.url("/hls/silent/index.m3u8"));
    assert!(!master.contains("EXT-X-MEDIA"), "{master}");
    assert!(!master.contains("AUDIO="), "{master}");
    let probe = ffprobe(&s.url("/hls/silent/index.m3u8"), &[]);
    let streams = probe["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0]["codec_name"], "h264");
}
