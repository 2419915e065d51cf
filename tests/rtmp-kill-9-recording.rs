//! `kill -9` of the relay in the middle of an RTMP lecture (ffmpeg still publishing): at the
//! next start the recording is recovered, missing at most what was not yet a whole part, and
//! its replay decodes to the end. (The same for SRT, with the encoder stopped first, is in
//! tests/recording.rs.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::replay::{Folder, recordings};
use common::*;

/// Seconds of media a live media playlist lists: its segments and the parts of the open one.
fn listed_seconds(playlist: &str) -> f64 {
    let (mut total, mut open_parts) = (0.0, 0.0);
    for line in playlist.lines() {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            total += d.trim_end_matches(',').parse::<f64>().unwrap();
            open_parts = 0.0;
        } else if line.starts_with("#EXT-X-PART:") {
            open_parts += attr(line, "DURATION").unwrap().parse::<f64>().unwrap();
        }
    }
    total + open_parts
}

#[test]
fn kill_9_under_an_rtmp_publisher_loses_at_most_the_last_part() {
    let dir = Folder::new("rtmp-kill9");
    let config = format!(
        "[recording]\nenabled = true\ndir = \"{}\"\nmin_free_mb = 0\n\
         [hls]\nwindow_segments = 30\n[lectures]\ngrace_period_s = 60\n",
        dir.0.display()
    );
    let mut s = Server::start(&config);
    let _enc = ffmpeg_publish(&s.rtmp_url("hall"), "320x180", 25, 440);
    wait_until(Duration::from_secs(40), "8 s recorded", || {
        recordings(&s, "hall")
            .into_iter()
            .find(|r| r["duration_s"].as_f64().is_some_and(|d| d >= 8.0))
    });
    let playlist = get_text(&s.url("/hls/hall/video/index.m3u8"));
    // Killed right after reading what players were offered, the publisher still sending.
    s.kill9();
    let streamed = listed_seconds(&playlist);
    let part: f64 = attr(
        playlist
            .lines()
            .find(|l| l.starts_with("#EXT-X-PART-INF"))
            .unwrap(),
        "PART-TARGET",
    )
    .unwrap()
    .parse()
    .unwrap();

    let s = Server::start(&config);
    let rec = wait_until(Duration::from_secs(40), "the recording recovered", || {
        recordings(&s, "hall")
            .into_iter()
            .find(|r| r["state"] == "recovered")
    });
    let recovered = rec["duration_s"].as_f64().unwrap();
    // Parts are written as they are made, so at most the one being made is lost; a part
    // finished between the playlist read and the kill may be there too.
    assert!(
        recovered >= streamed - part - 0.05 && recovered <= streamed + part + 0.05,
        "recovered {recovered} s of {streamed} s offered (part target {part})"
    );
    assert!(
        get_text(&s.url("/metrics")).contains("jiangtang_recordings_recovered_total 1\n"),
        "{}",
        s.log()
    );
    let id = rec["id"].as_str().unwrap();
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
}
