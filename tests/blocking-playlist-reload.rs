//! LL-HLS delivery directives: blocking playlist reload (`_HLS_msn`, `_HLS_part`) returns
//! when the part appears, preload-hinted parts are held until they exist, and requests the
//! specification calls bad get 400.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `(msn, part)` of a part URI `part-INSTANCE-MSN-PART.m4s`.
fn part_pos(uri: &str) -> (u64, u64) {
    let mut it = uri.trim_end_matches(".m4s").rsplit('-');
    let part = it.next().unwrap().parse().unwrap();
    let msn = it.next().unwrap().parse().unwrap();
    (msn, part)
}

/// The last part listed and the preload hint of a media playlist.
fn edge(text: &str) -> ((u64, u64), String) {
    let last = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .map(|l| part_pos(attr(l, "URI").unwrap()))
        .next_back()
        .unwrap();
    let hint = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:"))
        .map(|l| attr(l, "URI").unwrap().to_string())
        .unwrap();
    (last, hint)
}

#[test]
fn blocking_reload_returns_when_the_part_appears() {
    let s = Server::start("[hls]\nblock_timeout_ms = 6000\n");
    let _p = ffmpeg_publish(&s.rtmp_url("blk"), "320x180", 25, 440);
    wait_for_segments(&s, "blk", "video", 2);
    let playlist = s.url("/hls/blk/video/index.m3u8");

    for _ in 0..3 {
        let (last, hint) = edge(&get_text(&playlist));
        let (hmsn, hpart) = part_pos(&hint);
        assert!((hmsn, hpart) > last, "hint {hint} after last part {last:?}");
        // Ask for the part after the hinted one: the answer must wait for it.
        let started = Instant::now();
        let (status, headers, body) = get(&format!(
            "{playlist}?_HLS_msn={hmsn}&_HLS_part={}",
            hpart + 1
        ));
        let waited = started.elapsed();
        assert_eq!(status, 200);
        let text = String::from_utf8(body).unwrap();
        let (new_last, _) = edge(&text);
        // Either that part, or (past a segment's end) the next segment's first part.
        assert!(
            new_last >= (hmsn, hpart + 1) || new_last.0 > hmsn,
            "{new_last:?} for {hmsn}.{}",
            hpart + 1
        );
        assert!(
            waited < Duration::from_secs(3),
            "blocked {waited:?}, far longer than two parts"
        );
        assert_eq!(headers["cache-control"], "public, max-age=12");

        // The hinted part itself, requested before it existed, was held and then served.
        let (status, headers, part) = get(&s.url(&format!("/hls/blk/video/{hint}")));
        assert_eq!(status, 200, "{hint}");
        assert_eq!(headers["content-type"], "video/mp4");
        assert_eq!(&part[4..8], b"moof");
    }

    // Already present: answered at once.
    let (last, _) = edge(&get_text(&playlist));
    let started = Instant::now();
    let (status, _, _) = get(&format!(
        "{playlist}?_HLS_msn={}&_HLS_part={}",
        last.0, last.1
    ));
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(500));

    // Too far ahead (by segments, or by parts beyond the Advance Part Limit), a part without
    // an MSN, nonsense: 400 at once.
    for q in [
        format!("_HLS_msn={}", last.0 + 10),
        format!("_HLS_msn={}&_HLS_part={}", last.0, last.1 + 12),
        "_HLS_part=1".to_string(),
        "_HLS_msn=abc".to_string(),
        "_HLS_msn=-3".to_string(),
    ] {
        let started = Instant::now();
        let (status, headers, _) = get(&format!("{playlist}?{q}"));
        assert_eq!(status, 400, "{q}");
        assert_eq!(headers["cache-control"], "no-cache");
        assert!(started.elapsed() < Duration::from_millis(500), "{q}");
    }

    // A part far in the future is not held: 404 at once.
    let (_, hint) = edge(&get_text(&playlist));
    let far = hint.replace(
        &format!("-{}-", part_pos(&hint).0),
        &format!("-{}-", part_pos(&hint).0 + 20),
    );
    let started = Instant::now();
    assert_eq!(get(&s.url(&format!("/hls/blk/video/{far}"))).0, 404);
    assert!(started.elapsed() < Duration::from_millis(500));
    // So is anything that is not one of our file names.
    for bad in ["seg-0-1.m4s", "..%2f..%2fetc%2fpasswd", "index.m3u"] {
        assert_eq!(
            get(&s.url(&format!("/hls/blk/video/{bad}"))).0,
            404,
            "{bad}"
        );
    }
    assert_eq!(get(&s.url("/hls/nope/index.m3u8")).0, 404);
    assert_eq!(get(&s.url("/hls/blk/audio-xx/index.m3u8")).0, 404);
}

#[test]
fn a_blocking_reload_that_cannot_be_answered_in_time_is_a_503() {
    // RFC 8216bis 6.2.5.2: after blocking for the timeout, "Service Unavailable", never a
    // playlist without the part asked for.
    let s = Server::start("[hls]\nblock_timeout_ms = 1000\n[lectures]\ngrace_period_s = 30\n");
    let p = ffmpeg_publish(&s.rtmp_url("gone"), "320x180", 25, 440);
    wait_for_segments(&s, "gone", "video", 2);
    drop(p);
    let playlist = s.url("/hls/gone/video/index.m3u8");
    // The publisher is away (reconnecting): the next part does not come.
    std::thread::sleep(Duration::from_millis(500));
    let (_, hint) = edge(&get_text(&playlist));
    let (hmsn, hpart) = part_pos(&hint);
    let started = Instant::now();
    let (status, headers, _) = get(&format!("{playlist}?_HLS_msn={hmsn}&_HLS_part={hpart}"));
    let waited = started.elapsed();
    assert_eq!(status, 503);
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "answered after {waited:?}"
    );
}
