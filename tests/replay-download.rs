//! A replay's MP4 download and poster, against the real relay and real players: ffmpeg
//! publishes three dialects over SRT (and an audio-only lecture over RTMP), the lecture
//! ends, and the recording's `download.mp4` — with every dialect, and with one — is an
//! ordinary progressive MP4 (moov before mdat) that ffprobe reads with the right language
//! tags and track names and ffmpeg decodes from end to end, each dialect's track carrying
//! its own tone; ranges, ETags and the file name are what a browser and a CDN need; the
//! poster is a JPEG of the picture's size; an audio-only recording has none.

mod common;

use std::process::Command;
use std::time::Duration;

use common::replay::*;
use common::*;
use serde_json::Value;

/// Top-level boxes of an MP4 file: (type, size).
fn top_boxes(data: &[u8]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i + 8 <= data.len() {
        let mut size = u64::from(u32::from_be_bytes(data[i..i + 4].try_into().unwrap()));
        let kind = String::from_utf8_lossy(&data[i + 4..i + 8]).into_owned();
        if size == 1 {
            size = u64::from_be_bytes(data[i + 8..i + 16].try_into().unwrap());
        }
        out.push((kind, size));
        if size < 8 {
            break;
        }
        i += size as usize;
    }
    out
}

/// The dominant tone of audio stream `n` of `file`, over `seconds` from `start`.
fn tone_of(file: &str, n: usize, start: f64, seconds: f64) -> f64 {
    let out = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-ss",
            &start.to_string(),
            "-i",
            file,
        ])
        .args(["-map", &format!("0:a:{n}"), "-t", &seconds.to_string()])
        .args(["-ac", "1", "-ar", "16000", "-f", "s16le", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pcm: Vec<i16> = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    tone_hz(&pcm)
}

/// ffmpeg decodes the whole file and says nothing.
fn decodes_cleanly(file: &str) {
    let out = Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-i", file, "-map", "0", "-f", "null", "-",
        ])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg decoding {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[test]
fn the_mp4_download_plays_with_its_dialects_labelled_and_the_poster_is_a_jpeg() {
    let dir = Folder::new("replay-download");
    let s = Server::start(&format!(
        "{}\n[[lecture]]\nname = \"hall\"\ntitle = \"西和讲堂 书法课\"\n",
        recording_config(&dir)
    ));
    let mut hall = srt_lecture(&s, "hall", THREE, 14);
    // An audio-only lecture at the same time: a recording without a picture.
    let mut radio = Proc(
        Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "sine=frequency=550:sample_rate=48000"])
            .args(["-t", "8", "-c:a", "aac", "-b:a", "64k", "-f", "flv"])
            .arg(s.rtmp_url("radio"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ffmpeg"),
    );

    // While the lecture is live, its recording cannot be downloaded yet, and says so.
    let live = wait_recording(&s, "hall", "recording", Duration::from_secs(20));
    assert_eq!(live["mp4"], Value::Null, "{live}");
    let id = live["id"].as_str().unwrap().to_string();
    let (status, _, body) = get(&s.url(&format!("/replay/{id}/download.mp4")));
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    // The poster comes as soon as the first video segment is on disk, while still live.
    let poster_url = wait_until(Duration::from_secs(30), "the poster while live", || {
        recordings(&s, "hall")
            .into_iter()
            .find(|r| r["id"] == id.as_str())
            .and_then(|r| r["poster"].as_str().map(str::to_string))
    });
    assert_eq!(poster_url, format!("/replay/{id}/poster.jpg"));

    assert_eq!(
        hall.wait(Duration::from_secs(40)),
        Some(true),
        "ffmpeg (hall)"
    );
    assert_eq!(
        radio.wait(Duration::from_secs(30)),
        Some(true),
        "ffmpeg (radio)"
    );
    let rec = wait_recording(&s, "hall", "complete", Duration::from_secs(30));
    let duration = rec["duration_s"].as_f64().unwrap();
    assert!(duration > 10.0, "{rec}");
    assert_eq!(rec["mp4"], format!("/replay/{id}/download.mp4"));
    let dialect_links: Vec<Value> = rec["dialects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mp4"].clone())
        .collect();
    assert_eq!(
        dialect_links,
        ["cmn", "yue", "hak"]
            .iter()
            .map(|l| Value::String(format!("/replay/{id}/download.mp4?lang={l}")))
            .collect::<Vec<_>>(),
        "{rec}"
    );

    // Every dialect, each a labelled track.
    let url = s.url(&format!("/replay/{id}/download.mp4?lang=all"));
    let (status, h, all) = get(&url);
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "video/mp4");
    assert_eq!(header(&h, "content-length"), all.len().to_string());
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert!(header(&h, "cache-control").contains("immutable"));
    let etag = header(&h, "etag").to_string();
    let disposition = header(&h, "content-disposition");
    assert!(
        disposition.starts_with("attachment; filename=\"hall-")
            && disposition.contains("-all.mp4\""),
        "{disposition}"
    );
    assert!(
        disposition.contains("filename*=UTF-8''%E8%A5%BF%E5%92%8C%E8%AE%B2%E5%A0%82"),
        "{disposition}"
    );
    let boxes = top_boxes(&all);
    let kinds: Vec<&str> = boxes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["ftyp", "moov", "mdat"], "progressive, moov first");
    assert_eq!(boxes.iter().map(|b| b.1).sum::<u64>(), all.len() as u64);
    // The whole BCP-47 tags ride along in elng boxes.
    for tag in ["cmn", "yue", "hak"] {
        let needle = [b"elng\0\0\0\0".as_slice(), tag.as_bytes(), b"\0"].concat();
        assert!(
            all.windows(needle.len()).any(|w| w == needle.as_slice()),
            "no elng {tag}"
        );
    }
    let file = write_temp("replay-all.mp4", &[&all]);
    let file = file.to_str().unwrap();
    let probe = ffprobe(file, &[]);
    let streams = probe["streams"].as_array().unwrap();
    let kinds: Vec<&str> = streams
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["h264", "aac", "aac", "aac"], "{probe}");
    assert_eq!(streams[0]["width"], 320);
    assert_eq!(streams[0]["height"], 180);
    let langs: Vec<&str> = streams[1..]
        .iter()
        .map(|s| s["tags"]["language"].as_str().unwrap())
        .collect();
    assert_eq!(langs, ["cmn", "yue", "hak"], "{probe}");
    let names: Vec<&str> = streams[1..]
        .iter()
        .map(|s| s["tags"]["handler_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["普通话", "粤语", "客家话"], "{probe}");
    // The default dialect is the track players pick; the others are its alternatives.
    let defaults: Vec<i64> = streams[1..]
        .iter()
        .map(|s| s["disposition"]["default"].as_i64().unwrap())
        .collect();
    assert_eq!(defaults, [1, 0, 0], "{probe}");
    let file_duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (file_duration - duration).abs() < 1.0,
        "MP4 {file_duration} s, recording {duration} s"
    );
    let video_duration: f64 = streams[0]["duration"].as_str().unwrap().parse().unwrap();
    assert!(video_duration > duration - 1.5, "{probe}");
    assert_eq!(
        probe["format"]["tags"]["title"], "西和讲堂 书法课",
        "{probe}"
    );
    decodes_cleanly(file);
    // Each track carries its own dialect's tone, at the start and after a seek.
    for (n, (lang, hz)) in THREE.iter().enumerate() {
        for start in [1.0, duration - 4.0] {
            let heard = tone_of(file, n, start, 2.0);
            assert!(
                (heard - f64::from(*hz)).abs() < 15.0,
                "{lang} at {start} s: {heard} Hz"
            );
        }
    }

    // Ranges: exactly the bytes of the whole file; an ETag that matches is a 304.
    for (range, from, to) in [
        ("bytes=0-99", 0usize, 100usize),
        ("bytes=1000-70999", 1000, 71000),
        ("bytes=-4096", all.len() - 4096, all.len()),
        (
            &format!("bytes={}-", all.len() - 10) as &str,
            all.len() - 10,
            all.len(),
        ),
    ] {
        let (status, h, part) = get_with(&url, &[("range", range)]);
        assert_eq!(status, 206, "{range}");
        assert_eq!(part, &all[from..to], "{range}");
        assert_eq!(
            header(&h, "content-range"),
            format!("bytes {from}-{}/{}", to - 1, all.len())
        );
        assert_eq!(header(&h, "content-length"), (to - from).to_string());
    }
    let (status, h, _) = get_with(&url, &[("range", &format!("bytes={}-", all.len()))]);
    assert_eq!(status, 416);
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes */{}", all.len())
    );
    let (status, _, body) = get_with(&url, &[("if-none-match", &etag)]);
    assert_eq!((status, body.len()), (304, 0));

    // One dialect: the picture and 粤语.
    let (status, h, yue) = get(&s.url(&format!("/replay/{id}/download.mp4?lang=yue")));
    assert_eq!(status, 200);
    assert!(header(&h, "content-disposition").contains("-yue.mp4\""));
    assert!(yue.len() < all.len());
    let file = write_temp("replay-yue.mp4", &[&yue]);
    let file = file.to_str().unwrap();
    let probe = ffprobe(file, &[]);
    let streams = probe["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2, "{probe}");
    assert_eq!(streams[1]["tags"]["language"], "yue");
    assert_eq!(streams[1]["tags"]["handler_name"], "粤语");
    assert_eq!(streams[1]["disposition"]["default"], 1);
    decodes_cleanly(file);
    assert!((tone_of(file, 0, 2.0, 2.0) - 660.0).abs() < 15.0);

    // Errors are clear.
    let (status, _, _) = get(&s.url(&format!("/replay/{id}/download.mp4?lang=eng")));
    assert_eq!(status, 404);
    let (status, _, _) = get(&s.url(&format!("/replay/{id}/download.mp4?lang=%3Cx%3E")));
    assert_eq!(status, 400);
    let (status, _, _) = get(&s.url("/replay/nope/download.mp4"));
    assert_eq!(status, 404);

    // The poster: a JPEG of the picture's size, cached for good.
    let (status, h, jpeg) = get(&s.url(&poster_url));
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "image/jpeg");
    assert!(header(&h, "cache-control").contains("immutable"));
    let etag = header(&h, "etag").to_string();
    let (status, _, _) = get_with(&s.url(&poster_url), &[("if-none-match", &etag)]);
    assert_eq!(status, 304);
    assert_eq!(&jpeg[..3], &[0xff, 0xd8, 0xff]);
    let file = write_temp("poster.jpg", &[&jpeg]);
    let probe = ffprobe(file.to_str().unwrap(), &[]);
    let p = &probe["streams"][0];
    assert_eq!(p["codec_name"], "mjpeg", "{probe}");
    assert_eq!(
        (p["width"].as_i64(), p["height"].as_i64()),
        (Some(320), Some(180))
    );
    decodes_cleanly(file.to_str().unwrap());
    assert!(dir.0.join(&id).join("poster.jpg").is_file());

    // Audio only: no poster, an audio MP4 with its one dialect.
    let radio = wait_recording(&s, "radio", "complete", Duration::from_secs(30));
    assert_eq!(radio["poster"], Value::Null, "{radio}");
    let rid = radio["id"].as_str().unwrap();
    let (status, _, _) = get(&s.url(&format!("/replay/{rid}/poster.jpg")));
    assert_eq!(status, 404);
    let (status, h, m4a) = get(&s.url(radio["mp4"].as_str().unwrap()));
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "audio/mp4");
    let file = write_temp("radio.mp4", &[&m4a]);
    let probe = ffprobe(file.to_str().unwrap(), &[]);
    assert_eq!(probe["streams"].as_array().unwrap().len(), 1, "{probe}");
    assert_eq!(probe["streams"][0]["tags"]["language"], "cmn");
    decodes_cleanly(file.to_str().unwrap());
}
