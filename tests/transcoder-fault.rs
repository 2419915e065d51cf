//! A transcoder that breaks under a live lecture: ffmpeg publishes two dialects over SRT and
//! damages one of them (the `noise` bitstream filter rewrites half the bytes of its AAC
//! frames for four seconds, the ADTS framing intact). The real Opus encoder of that dialect
//! fails on it and is restarted; the WebRTC viewers keep their sessions and video, the
//! damaged dialect's Opus comes back, and the other dialect and the video go on in HLS.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn restarts(s: &Server) -> u64 {
    get_text(&s.url("/metrics"))
        .lines()
        .find_map(|l| l.strip_prefix("jiangtang_transcoder_restarts_total "))
        .expect("the restart counter")
        .parse()
        .unwrap()
}

#[test]
fn a_dialect_whose_transcoder_fails_is_restarted_and_the_lecture_plays_on() {
    let s = Server::start("");
    assert_eq!(restarts(&s), 0);
    // 25 s of two dialects; cmn's AAC damaged from 8 s to 12 s of the stream.
    let _enc = Proc(
        Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-re", "-t", "25"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000"])
            .args(["-map", "0:v", "-map", "1:a", "-map", "2:a"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-g", "50", "-pix_fmt", "yuv420p", "-b:v", "500k"])
            .args(["-c:a", "aac", "-b:a", "64k", "-ac", "1"])
            .args(["-metadata:s:a:0", "language=cmn"])
            .args(["-metadata:s:a:1", "language=yue"])
            .args([
                "-bsf:a:0",
                "noise=amount=if(between(pts*tb\\,8\\,12)\\,2\\,0)",
            ])
            .args(["-f", "mpegts", &srt_url(&s, "publish:broken", "")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("ffmpeg"),
    );
    wait_for_segments(&s, "broken", "video", 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cmn = rt.block_on(common::whep::Viewer::start(s.http, "broken?lang=cmn"));
    let yue = rt.block_on(common::whep::Viewer::start(s.http, "broken?lang=yue"));
    wait_until(Duration::from_secs(10), "both viewers to get audio", || {
        (cmn.audio_frames() > 20 && yue.audio_frames() > 20).then_some(())
    });

    // The damage: cmn's encoder fails (50 corrupt frames in a row) and is restarted.
    wait_until(
        Duration::from_secs(20),
        "the opus encoder's restart",
        || (restarts(&s) >= 1).then_some(()),
    );
    let logged = |what: &str| {
        s.log()
            .lines()
            .any(|l| l.contains(what) && l.contains("transcoder=\"opus encoder\""))
    };
    assert!(logged("Could not decode stream"), "{}", s.log());
    // It stays silent while the damage lasts, then plays again: Opus of cmn comes back
    // once the input is sound (its viewer's session is the same one).
    let damage_seen = Instant::now();
    let (cmn_audio, yue_audio, video) =
        (cmn.audio_frames(), yue.audio_frames(), cmn.video_frames());
    wait_until(Duration::from_secs(15), "cmn's Opus to come back", || {
        (cmn.audio_frames() > cmn_audio + 100).then_some(())
    });
    assert!(logged("restarted"), "{}", s.log());
    assert!(cmn.connected() && yue.connected());
    assert!(cmn.video_frames() > video + 25, "video went on");
    // The other dialect never stopped: about 50 packets a second.
    let secs = damage_seen.elapsed().as_secs_f64();
    let yue_rate = (yue.audio_frames() - yue_audio) as f64 / secs;
    assert!(yue_rate > 35.0, "yue: {yue_rate:.0} packets/s");

    // HLS: video and yue still advance and yue is still its tone.
    let v = wait_for_segments(&s, "broken", "video", 1);
    let y = wait_for_segments(&s, "broken", "audio-yue", 1);
    let heard = tone_hz(&decode_pcm(&s.url("/hls/broken/audio-yue/index.m3u8"), 2.0));
    assert!((heard - 660.0).abs() < 15.0, "yue: {heard} Hz");
    let last = |p: &m3u8_rs::MediaPlaylist| p.media_sequence + p.segments.len() as u64;
    assert!(last(&v).abs_diff(last(&y)) <= 1);
    assert!(!s.log().contains("panicked"), "{}", s.log());
}
