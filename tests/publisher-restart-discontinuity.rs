//! A publisher that drops and comes back within the grace period continues the same lecture:
//! same playlists, one `EXT-X-DISCONTINUITY` on every rendition at the same segment, media
//! sequence numbers that keep increasing, and no 404 for players in the gap. After the grace
//! period the lecture ends with `EXT-X-ENDLIST`.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn discontinuity_msn(text: &str) -> Option<u64> {
    let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).ok()?;
    pl.segments
        .iter()
        .position(|s| s.discontinuity)
        .map(|i| pl.media_sequence + i as u64)
}

#[test]
fn restart_within_grace_continues_with_a_discontinuity() {
    let s = Server::start("[lectures]\ngrace_period_s = 30\n[hls]\nblock_timeout_ms = 1500\n");
    let url = s.rtmp_url("restart?lang=hak");
    let mut first = ffmpeg_publish(&url, "320x180", 25, 440);
    let before = wait_for_segments(&s, "restart", "video", 3);
    let instance_before = before.segments[0]
        .uri
        .split('-')
        .nth(1)
        .unwrap()
        .to_string();
    first.stop();

    // The gap: every playlist keeps answering 200, blocking requests included.
    let urls = [
        s.url("/hls/restart/index.m3u8"),
        s.url("/hls/restart/video/index.m3u8"),
        s.url("/hls/restart/audio-hak/index.m3u8"),
    ];
    let gap = Instant::now();
    while gap.elapsed() < Duration::from_secs(3) {
        for u in &urls {
            let (status, _, body) = get(u);
            assert_eq!(
                status,
                200,
                "{u} during the gap: {}",
                String::from_utf8_lossy(&body)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let during = m3u8_rs::parse_media_playlist_res(get_text(&urls[1]).as_bytes()).unwrap();
    let next = during.media_sequence + during.segments.len() as u64;
    let (status, headers, _) = get(&format!("{}?_HLS_msn={next}&_HLS_part=0", urls[1]));
    // A blocking reload for a part the gap holds back cannot be answered in time: 503, as
    // RFC 8216bis 6.2.5.2 says (players retry), never a playlist without that part.
    assert_eq!(status, 503, "a blocking reload spanning the gap");
    assert_eq!(headers["cache-control"], "no-cache", "and is not cached");
    let api: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/restart"))).unwrap();
    assert_eq!(api["status"], "reconnecting");

    // The publisher comes back (its clock restarts at zero).
    let _second = ffmpeg_publish(&url, "320x180", 25, 440);
    let after = wait_until(
        Duration::from_secs(30),
        "segments after the discontinuity",
        || {
            let text = get_text(&urls[1]);
            let d = discontinuity_msn(&text)?;
            let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).ok()?;
            (pl.media_sequence + pl.segments.len() as u64 >= d + 3).then_some((text, d))
        },
    );
    let (video_text, disc) = after;
    assert_eq!(
        video_text.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{video_text}"
    );
    let pl = m3u8_rs::parse_media_playlist_res(video_text.as_bytes()).unwrap();
    assert!(
        pl.media_sequence >= before.media_sequence,
        "media sequence went back"
    );
    assert!(disc >= before.media_sequence + before.segments.len() as u64);
    // Same playlists, same URL instance: players did not have to start over.
    assert!(pl.segments.iter().all(|x| x.uri.contains(&instance_before)));
    // The audio rendition has its discontinuity at the same segment.
    let audio = wait_until(Duration::from_secs(10), "audio discontinuity", || {
        discontinuity_msn(&get_text(&urls[2])).filter(|&m| m == disc)
    });
    assert_eq!(audio, disc);
    // PROGRAM-DATE-TIME jumps across the gap (wall clock), not backwards.
    let pdts: Vec<_> = pl
        .segments
        .iter()
        .filter_map(|x| x.program_date_time)
        .collect();
    assert!(pdts.windows(2).all(|w| w[1] > w[0]));
    let i = (disc - pl.media_sequence) as usize;
    assert!(
        i > 0,
        "the segment before the discontinuity is still listed"
    );
    let jump =
        pl.segments[i].program_date_time.unwrap() - pl.segments[i - 1].program_date_time.unwrap();
    assert!(jump.num_milliseconds() > 3_000, "PDT jump {jump}");

    // The whole thing still plays as one stream in a plain client.
    let probe = ffprobe(&urls[0], &[]);
    assert!(
        probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["codec_name"] == "h264")
    );
    let api: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/restart"))).unwrap();
    assert_eq!(api["status"], "live");
    assert_eq!(api["sessions"], 2);
}

#[test]
fn lecture_ends_after_the_grace_period_and_can_start_afresh() {
    let s = Server::start("[lectures]\ngrace_period_s = 2\nended_retention_s = 60\n");
    let url = s.rtmp_url("ending");
    let mut p = ffmpeg_publish(&url, "320x180", 25, 440);
    let first = wait_for_segments(&s, "ending", "video", 2);
    p.stop();
    let ended = wait_until(Duration::from_secs(10), "EXT-X-ENDLIST", || {
        let text = get_text(&s.url("/hls/ending/video/index.m3u8"));
        text.contains("#EXT-X-ENDLIST").then_some(text)
    });
    assert!(!ended.contains("PRELOAD-HINT"));
    let api: serde_json::Value =
        serde_json::from_str(&get_text(&s.url("/api/v1/streams/ending"))).unwrap();
    assert_eq!(api["status"], "ended");
    // Segments of the ended lecture are still served during retention.
    let seg = &m3u8_rs::parse_media_playlist_res(ended.as_bytes())
        .unwrap()
        .segments[0]
        .uri;
    assert_eq!(get(&s.url(&format!("/hls/ending/video/{seg}"))).0, 200);

    // Publishing the same name again starts a new lecture with fresh URLs.
    let _p2 = ffmpeg_publish(&url, "320x180", 25, 440);
    let second = wait_until(Duration::from_secs(30), "a new lecture", || {
        let (status, _, body) = get(&s.url("/hls/ending/video/index.m3u8"));
        let pl = m3u8_rs::parse_media_playlist_res(&body).ok()?;
        (status == 200 && !pl.end_list && !pl.segments.is_empty()).then_some(pl)
    });
    assert_ne!(
        first.segments[0].uri.split('-').nth(1),
        second.segments[0].uri.split('-').nth(1),
        "a new lecture must not reuse cached URLs"
    );
}
