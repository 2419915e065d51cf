//! RTMP in (ffmpeg, GStreamer rtmp2sink at two chunk sizes), LL-HLS out: playlists, parts,
//! segments, headers, and decoding by ffprobe.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// A part: duration, URI, INDEPENDENT.
type PartEntry = (f64, String, bool);
/// A segment: MSN, EXTINF, URI, its parts.
type SegmentEntry = (u64, f64, String, Vec<PartEntry>);

/// One media playlist, parsed by hand for the LL-HLS tags m3u8-rs does not model.
#[derive(Debug)]
struct Listed {
    part_target: f64,
    segments: Vec<SegmentEntry>,
}

fn listed(text: &str) -> Listed {
    let mut part_target = 0.0;
    let mut msn: u64 = 0;
    let mut parts = Vec::new();
    let mut segments = Vec::new();
    let mut extinf = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            part_target = attr(v, "PART-TARGET").unwrap().parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            parts.push((
                attr(v, "DURATION").unwrap().parse::<f64>().unwrap(),
                attr(v, "URI").unwrap().to_string(),
                attr(v, "INDEPENDENT") == Some("YES"),
            ));
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
        } else if !line.starts_with('#') && !line.is_empty() {
            segments.push((
                msn,
                extinf.take().unwrap(),
                line.to_string(),
                std::mem::take(&mut parts),
            ));
            msn += 1;
        }
    }
    Listed {
        part_target,
        segments,
    }
}

/// Packaging settings a test configured.
struct Expect {
    part_ms: u64,
    target_duration: u64,
}

const DEFAULTS: Expect = Expect {
    part_ms: 400,
    target_duration: 2,
};

fn check_rendition(
    s: &Server,
    stream: &str,
    rendition: &str,
    kind: &str,
    fps: Option<f64>,
    expect: &Expect,
) -> Vec<u64> {
    let base = format!("/hls/{stream}/{rendition}/");
    let (status, headers, body) = get(&s.url(&format!("{base}index.m3u8")));
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/vnd.apple.mpegurl");
    let cache = headers["cache-control"].to_str().unwrap();
    assert!(
        cache.contains(&format!("max-age={}", (expect.target_duration / 2).max(1))),
        "{cache}"
    );
    let text = String::from_utf8(body).unwrap();
    let target = format!("#EXT-X-TARGETDURATION:{}", expect.target_duration);
    for tag in [
        "#EXT-X-VERSION:6",
        &target,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=",
        "#EXT-X-PART-INF:PART-TARGET=",
        "#EXT-X-MAP:URI=",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=",
        "#EXT-X-RENDITION-REPORT:URI=",
    ] {
        assert!(
            text.contains(tag),
            "{rendition} playlist lacks {tag}:\n{text}"
        );
    }
    let l = listed(&text);
    // Parts hold whole frames near the configured target (at least 300 ms, the shortest
    // that can keep to RFC 8216bis's 85 % rule with AAC's frames); PART-TARGET covers the
    // longest part of any rendition (an audio part may end one AAC frame after the video's).
    let configured = expect.part_ms.max(300) as f64 / 1000.0;
    assert!(
        l.part_target >= configured && l.part_target <= configured * 1.2,
        "PART-TARGET {} for a {} ms target",
        l.part_target,
        expect.part_ms
    );
    let map = text
        .lines()
        .find_map(|x| x.strip_prefix("#EXT-X-MAP:URI=\""))
        .unwrap()
        .trim_end_matches('"');
    let (status, headers, init) = get(&s.url(&format!("{base}{map}")));
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], format!("{kind}/mp4"));
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let mut msns = Vec::new();
    for (msn, extinf, uri, parts) in &l.segments {
        msns.push(*msn);
        assert!(
            *extinf < expect.target_duration as f64 + 0.5,
            "EXTINF {extinf} rounds above the target duration"
        );
        let (status, headers, seg) = get(&s.url(&format!("{base}{uri}")));
        assert_eq!(status, 200, "{uri}");
        assert_eq!(
            headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        if parts.is_empty() {
            continue;
        }
        // Parts add up to their segment, byte for byte and in duration.
        let total: f64 = parts.iter().map(|p| p.0).sum();
        assert!(
            (total - extinf).abs() < 0.002,
            "{uri}: parts {total} vs EXTINF {extinf}"
        );
        let mut joined = Vec::new();
        for (i, (d, puri, independent)) in parts.iter().enumerate() {
            assert!(
                *d <= l.part_target + 1e-6,
                "part {puri} lasts {d} > {}",
                l.part_target
            );
            if i + 1 < parts.len() && !independent {
                assert!(
                    *d >= 0.85 * l.part_target - 1e-6,
                    "part {puri} lasts only {d}"
                );
            }
            let (status, headers, part) = get(&s.url(&format!("{base}{puri}")));
            assert_eq!(status, 200, "{puri}");
            assert_eq!(headers["content-type"], format!("{kind}/mp4"));
            assert_eq!(
                headers["cache-control"],
                "public, max-age=31536000, immutable"
            );
            joined.extend_from_slice(&part);
        }
        assert_eq!(joined, seg, "{uri} is its parts");
        if kind == "video" {
            assert!(parts[0].2, "video segments start with an independent part");
        }
        // The segment decodes on its own (with the init segment) and lasts what EXTINF says.
        let file = write_temp(&format!("{rendition}-{msn}.mp4"), &[&init, &seg]);
        let probe = ffprobe(file.to_str().unwrap(), &["-count_frames"]);
        let stream = &probe["streams"][0];
        let decoded: f64 = stream["nb_read_frames"].as_str().unwrap().parse().unwrap();
        if let Some(fps) = fps {
            let expected = extinf * fps;
            assert!(
                (decoded - expected).abs() <= 1.0,
                "{uri}: {decoded} frames for {extinf} s"
            );
        } else {
            let expected = extinf * 48_000.0 / 1024.0;
            assert!(
                (decoded - expected).abs() <= 1.5,
                "{uri}: {decoded} audio frames for {extinf} s"
            );
        }
        let _ = std::fs::remove_file(file);
    }
    msns
}

#[test]
fn ffmpeg_rtmp_publish_plays_as_ll_hls_with_its_dialect() {
    let s = Server::start("");
    let _publisher = ffmpeg_publish(&s.rtmp_url("lecture1?lang=yue"), "640x360", 30, 440);
    wait_for_segments(&s, "lecture1", "video", 4);
    wait_for_segments(&s, "lecture1", "audio-yue", 4);

    let (status, headers, body) = get(&s.url("/hls/lecture1/index.m3u8"));
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(headers["access-control-allow-origin"], "*");
    // Tracks can be added at any time (a dialect joins), so the list is always revalidated.
    assert_eq!(headers["cache-control"], "no-cache");
    let master = m3u8_rs::parse_master_playlist_res(&body).unwrap();
    assert_eq!(master.alternatives.len(), 1);
    let yue = &master.alternatives[0];
    assert_eq!(yue.language.as_deref(), Some("yue"));
    assert_eq!(yue.name, "粤语");
    assert!(yue.default && yue.autoselect);
    assert_eq!(yue.uri.as_deref(), Some("audio-yue/index.m3u8"));
    let variant = &master.variants[0];
    assert_eq!(variant.uri, "video/index.m3u8");
    assert_eq!(variant.audio.as_deref(), Some(yue.group_id.as_str()));
    let codecs = variant.codecs.as_deref().unwrap();
    assert!(
        codecs.starts_with("avc1.") && codecs.contains("mp4a.40.2"),
        "{codecs}"
    );
    let res = variant.resolution.unwrap();
    assert_eq!((res.width, res.height), (640, 360));
    assert!(variant.bandwidth > 300_000);

    let video = check_rendition(&s, "lecture1", "video", "video", Some(30.0), &DEFAULTS);
    let audio = check_rendition(&s, "lecture1", "audio-yue", "audio", None, &DEFAULTS);
    // Same segments in both renditions: players switch dialects without losing place.
    let common_msns: Vec<_> = video.iter().filter(|m| audio.contains(m)).collect();
    assert!(common_msns.len() >= 3, "{video:?} vs {audio:?}");

    // A plain HLS client (ffprobe/ffplay's demuxer) plays the same playlists.
    let probe = ffprobe(&s.url("/hls/lecture1/index.m3u8"), &[]);
    let streams = probe["streams"].as_array().unwrap();
    let v = streams.iter().find(|x| x["codec_type"] == "video").unwrap();
    assert_eq!(
        (v["codec_name"].as_str(), v["width"].as_u64()),
        (Some("h264"), Some(640))
    );
    let a = streams.iter().find(|x| x["codec_type"] == "audio").unwrap();
    assert_eq!(a["codec_name"], "aac");
    assert_eq!(a["tags"]["language"], "yue");

    // And hears the tone that was sent.
    let pcm = decode_pcm(&s.url("/hls/lecture1/audio-yue/index.m3u8"), 2.0);
    let hz = tone_hz(&pcm);
    assert!((hz - 440.0).abs() < 15.0, "heard {hz} Hz");
}

fn gst_publish(url: &str, chunk_size: u32) -> Proc {
    let pipeline = format!(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=180,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=50 bitrate=300 ! h264parse \
         ! queue ! flvmux name=m streamable=true ! rtmp2sink location={url} chunk-size={chunk_size} \
         audiotestsrc is-live=true freq=660 ! audio/x-raw,rate=44100,channels=2 \
         ! voaacenc ! aacparse ! queue ! m."
    );
    let child = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0 (install with scripts/setup.sh)");
    Proc(child)
}

#[test]
fn gstreamer_rtmp2sink_publishes_at_small_and_large_chunk_sizes() {
    let s = Server::start("");
    let _small = gst_publish(&s.rtmp_url("small"), 128);
    let _large = gst_publish(&s.rtmp_url("large"), 65_536);
    for name in ["small", "large"] {
        wait_for_segments(&s, name, "video", 3);
        let probe = ffprobe(&s.url(&format!("/hls/{name}/index.m3u8")), &[]);
        let streams = probe["streams"].as_array().unwrap();
        assert!(
            streams
                .iter()
                .any(|x| x["codec_name"] == "h264" && x["width"] == 320)
        );
        assert!(
            streams
                .iter()
                .any(|x| x["codec_name"] == "aac" && x["sample_rate"] == "44100")
        );
        // No ?lang=: the lecture's default dialect.
        let master = get_text(&s.url(&format!("/hls/{name}/index.m3u8")));
        assert!(
            master.contains("LANGUAGE=\"cmn\",") && master.contains("NAME=\"普通话\""),
            "{master}"
        );
    }
}

#[test]
fn configured_part_target_segment_length_and_dialect_names_with_b_frames() {
    // 200 ms parts, 1 s segments, the hall's own name for its dialect, and a publisher that
    // sends B-frames (composition offsets, decode order differs from display order).
    let s = Server::start(
        "[hls]\npart_target_ms = 200\nsegment_target_ms = 1000\n[dialects]\nyue = \"广州话\"\n",
    );
    let _publisher = ffmpeg_publish_args(
        &s.rtmp_url("short?lang=yue"),
        "320x180",
        30,
        660,
        &["-bf", "2", "-g", "30", "-keyint_min", "30"],
    );
    wait_for_segments(&s, "short", "video", 5);
    wait_for_segments(&s, "short", "audio-yue", 5);
    let expect = Expect {
        part_ms: 200,
        target_duration: 1,
    };
    check_rendition(&s, "short", "video", "video", Some(30.0), &expect);
    check_rendition(&s, "short", "audio-yue", "audio", None, &expect);
    let master = get_text(&s.url("/hls/short/index.m3u8"));
    assert!(
        master.contains("NAME=\"广州话\",LANGUAGE=\"yue\""),
        "{master}"
    );
    let api: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/short"))).unwrap();
    let names: Vec<&str> = api["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"广州话"), "{api}");
    // The B-frames made it through: some frame is presented later than it is decoded.
    let probe = ffprobe(
        &s.url("/hls/short/video/index.m3u8"),
        &["-show_frames", "-read_intervals", "%+2"],
    );
    let b = probe["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["pict_type"] == "B")
        .count();
    assert!(b > 0, "no B-frames reached the playlist");
}
