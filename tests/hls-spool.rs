//! The HLS window's older segments in unnamed files (`hls.spool`): a lecture published over
//! RTMP is served whole (every listed segment and part, decodable, the parts the same bytes
//! as their segment) while all but the newest segment of each rendition are read from the
//! spool; the spool folder shows no file; a folder that cannot hold files leaves the window
//! in memory and says so.

mod common;

use std::time::Duration;

use common::floods::metric;
use common::*;

/// A listed segment: media sequence number, `EXTINF`, URI.
type Listed = (u64, f64, String);

/// The URIs of a media playlist: its `EXT-X-MAP`, its segments and its parts `(msn, uri)`.
fn listing(text: &str) -> (String, Vec<Listed>, Vec<(u64, String)>) {
    let mut map = String::new();
    let mut msn = 0u64;
    let mut extinf = 0.0;
    let (mut segments, mut parts) = (Vec::new(), Vec::new());
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            map = attr(v, "URI").unwrap().to_string();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            parts.push((msn, attr(v, "URI").unwrap().to_string()));
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = v.trim_end_matches(',').parse().unwrap();
        } else if !line.starts_with('#') && !line.is_empty() {
            segments.push((msn, extinf, line.to_string()));
            msn += 1;
        }
    }
    (map, segments, parts)
}

/// Open files of `pid` inside `dir` (the spool's unnamed files show as deleted).
fn open_files_in(pid: u32, dir: &std::path::Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(dir))
        .count()
}

#[test]
fn the_windows_older_segments_are_served_from_the_spool() {
    let dir = scratch_dir("hls-spool");
    let s = Server::start(&format!(
        "[hls]\nspool_dir = {:?}\nmemory_segments = 1\n",
        dir.display().to_string()
    ));
    let _ff = ffmpeg_publish(&s.rtmp_url("spool"), "640x360", 25, 440);
    // Six listed segments of 2 s: four or more of them (and the two kept after) spooled.
    wait_for_segments(&s, "spool", "video", 6);
    assert!(metric(&s, "jiangtang_hls_spooled_segments_total") >= 6.0);
    for reason in ["queue_full", "write_failed"] {
        let name = format!("jiangtang_hls_spool_kept_in_memory_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&s, &name), 0.0, "{name}");
    }
    // One file per rendition (video, the dialect), not one per segment.
    let open = open_files_in(s.pid(), &dir);
    assert_eq!(open, 2, "the relay's spool files open in {}", dir.display());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the spool's files have no name"
    );

    let audio = get_text(&s.url("/hls/spool/index.m3u8"))
        .lines()
        .find(|l| l.starts_with("#EXT-X-MEDIA:TYPE=AUDIO"))
        .and_then(|l| attr(l, "URI"))
        .expect("an audio rendition")
        .to_string();
    let audio = audio.trim_end_matches("/index.m3u8").to_string();
    for (rendition, stream) in [("video", "v:0"), (audio.as_str(), "a:0")] {
        let base = s.url(&format!("/hls/spool/{rendition}/"));
        let (map, segments, parts) = listing(&get_text(&format!("{base}index.m3u8")));
        let mut whole = get(&format!("{base}{map}")).2;
        let mut segment_bytes = std::collections::HashMap::new();
        for (msn, _, uri) in &segments {
            let (status, headers, body) = get(&format!("{base}{uri}"));
            assert_eq!(status, 200, "{rendition} {uri}");
            assert_eq!(headers["content-length"], body.len().to_string().as_str());
            whole.extend_from_slice(&body);
            segment_bytes.insert(*msn, body);
        }
        // Parts are listed for the newest segments (in memory); those of older, spooled
        // segments stay servable for three target durations (a player a little behind):
        // together they are their segment, byte for byte.
        let (template_msn, template) = parts.first().expect("parts listed").clone();
        let newest = segments.last().unwrap().0;
        let spooled_msn = newest - 2;
        assert!(spooled_msn < template_msn, "an unlisted older segment");
        let prefix = template
            .strip_suffix(".m4s")
            .and_then(|t| t.rsplitn(3, '-').nth(2))
            .expect("part-INSTANCE-MSN-INDEX.m4s")
            .to_string();
        let mut old_parts = Vec::new();
        for index in 0.. {
            let uri = format!("{prefix}-{spooled_msn}-{index}.m4s");
            let (status, _, body) = get(&format!("{base}{uri}"));
            if status == 404 {
                break;
            }
            assert_eq!(status, 200, "{rendition} {uri}");
            old_parts.extend_from_slice(&body);
        }
        assert_eq!(
            &old_parts, &segment_bytes[&spooled_msn],
            "{rendition}: the spooled segment {spooled_msn}'s parts are the segment"
        );
        let mut by_segment: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
        for (msn, uri) in &parts {
            let (status, _, body) = get(&format!("{base}{uri}"));
            if status == 404 {
                // The preload hint's part of the open segment, not cut yet.
                continue;
            }
            assert_eq!(status, 200, "{rendition} {uri}");
            by_segment.entry(*msn).or_default().extend_from_slice(&body);
        }
        let mut compared = 0;
        for (msn, bytes) in &by_segment {
            if let Some(seg) = segment_bytes.get(msn) {
                assert_eq!(
                    bytes, seg,
                    "{rendition}: the parts of {msn} are the segment"
                );
                compared += 1;
            }
        }
        assert!(
            compared >= 1,
            "{rendition}: a segment with its parts listed"
        );

        let file = write_temp(&format!("spool-{}.mp4", stream.replace(':', "")), &[&whole]);
        let probe = ffprobe(
            file.to_str().unwrap(),
            &["-count_packets", "-select_streams", stream, "-show_streams"],
        );
        let packets: f64 = probe["streams"][0]["nb_read_packets"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let listed: f64 = segments.iter().map(|(_, d, _)| d).sum();
        let expected = if stream == "v:0" {
            listed * 25.0
        } else {
            listed * 48_000.0 / 1024.0
        };
        assert!(
            (packets - expected).abs() <= expected * 0.03 + 2.0,
            "{rendition}: {packets} packets decoded in {listed} s listed (expected {expected})"
        );
        let _ = std::fs::remove_file(file);
    }
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_spool_folder_that_cannot_hold_files_keeps_the_window_in_memory() {
    let dir = scratch_dir("hls-spool-bad");
    let not_a_folder = dir.join("a-file");
    std::fs::write(&not_a_folder, b"x").unwrap();
    let s = Server::start(&format!(
        "[hls]\nspool_dir = {:?}\n",
        not_a_folder.display().to_string()
    ));
    let _ff = ffmpeg_publish(&s.rtmp_url("nospool"), "320x180", 25, 440);
    let pl = wait_for_segments(&s, "nospool", "video", 3);
    for seg in &pl.segments {
        let (status, _, body) = get(&s.url(&format!("/hls/nospool/video/{}", seg.uri)));
        assert_eq!(status, 200, "{}", seg.uri);
        assert!(!body.is_empty());
    }
    wait_until(Duration::from_secs(5), "the log line", || {
        s.log()
            .contains("hls.spool_dir cannot hold files")
            .then_some(())
    });
    assert!(
        !get_text(&s.url("/metrics")).contains("jiangtang_hls_spooled_segments_total"),
        "no spool, no spool counters"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}
