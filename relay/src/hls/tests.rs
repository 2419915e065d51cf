//! Packager behaviour on synthetic lectures, faster than real time.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use media::aac::AacParams;
use media::h264::H264Params;
use media::{CodecParams, Frame, Language, TrackInfo};
use mp4_atom::Decode;

use super::packager::{Packager, Readiness, RenditionIdx, Settings};

pub(crate) const SPS: &[u8] = &[
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
];
pub(crate) const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

fn video_info() -> TrackInfo {
    TrackInfo::new(CodecParams::H264(
        H264Params::from_sps_pps(SPS, PPS).unwrap(),
    ))
}

fn audio_info(lang: &str) -> (TrackInfo, Language) {
    let mut info = TrackInfo::new(CodecParams::Aac(AacParams::lc(48_000, 2).unwrap()));
    let lang = Language::parse(lang).unwrap();
    info.language = Some(lang.clone());
    (info, lang)
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A publisher: 25 fps video with a keyframe every `gop` frames, and 48 kHz AAC audio per
/// dialect, interleaved in time order like an encoder sends them. Timestamps start at
/// `start_ms` (publisher clock).
struct Source {
    video: Option<RenditionIdx>,
    audio: Vec<RenditionIdx>,
    gop: u32,
    start_ms: i64,
    /// Wall-clock time (after [`t0`]) at which this source starts.
    wall_ms: u64,
    vframe: u32,
    aframe: u32,
}

impl Source {
    fn new(p: &mut Packager, video: bool, langs: &[&str], gop: u32) -> Self {
        p.begin_session();
        let video = video.then(|| p.set_track("video", video_info(), None, String::new()));
        let audio = langs
            .iter()
            .map(|l| {
                let (info, lang) = audio_info(l);
                p.set_track(&format!("audio-{l}"), info, Some(lang), l.to_string())
            })
            .collect();
        Source {
            video,
            audio,
            gop,
            start_ms: 123_456,
            wall_ms: 0,
            vframe: 0,
            aframe: 0,
        }
    }

    /// Pushes frames up to `ms` of publisher time (relative to the start).
    fn run_until(&mut self, p: &mut Packager, ms: i64) {
        loop {
            let vt = self.vframe as i64 * 40;
            let at = self.aframe as i64 * 1024 * 1000 / 48_000;
            let next_video = self.video.is_some() && vt <= at;
            let t = if next_video { vt } else { at };
            if t > ms {
                return;
            }
            let now = t0() + Duration::from_millis(self.wall_ms + t as u64);
            if next_video {
                let key = self.vframe.is_multiple_of(self.gop);
                let dts = (self.start_ms + vt) * 90;
                p.push(
                    self.video.unwrap(),
                    Frame {
                        dts,
                        pts: dts + 3600,
                        keyframe: key,
                        data: Bytes::from(vec![if key { 0x65 } else { 0x41 }; 500]),
                    },
                    now,
                );
                self.vframe += 1;
            } else {
                // RTMP-style millisecond timestamps: rounded, jittery.
                let ms = self.start_ms + at;
                let ts = ms * 48;
                for &a in &self.audio {
                    p.push(
                        a,
                        Frame {
                            dts: ts,
                            pts: ts,
                            keyframe: true,
                            data: Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
                        },
                        now,
                    );
                }
                self.aframe += 1;
            }
        }
    }
}

fn packager() -> Packager {
    Packager::new(Settings::from_ms(400, 2000, 6), "t".into())
}

/// A segment's or part's bytes, which these tests keep in memory (no spool).
fn mem(m: &crate::hls::spool::Media) -> &bytes::Bytes {
    m.in_memory().expect("in memory")
}

/// Decodes every fragment of a segment: `(tfdt, total duration, sample count, first flags)`.
fn fragments(data: &[u8]) -> Vec<(u64, u64, usize, u32)> {
    let mut out = Vec::new();
    let mut buf = data;
    while !buf.is_empty() {
        let moof = mp4_atom::Moof::decode(&mut buf).unwrap();
        let mdat = mp4_atom::Mdat::decode(&mut buf).unwrap();
        let traf = &moof.traf[0];
        let trun = &traf.trun[0];
        let total: u64 = trun
            .samples
            .iter()
            .map(|e| e.duration.unwrap() as u64)
            .sum();
        let size: usize = trun.samples.iter().map(|e| e.size.unwrap() as usize).sum();
        assert_eq!(size, mdat.data.len());
        out.push((
            traf.tfdt.as_ref().unwrap().base_media_decode_time,
            total,
            trun.samples.len(),
            trun.samples.get(0).unwrap().flags.unwrap(),
        ));
    }
    out
}

#[test]
fn segments_on_keyframes_parts_aligned_across_dialects() {
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn", "yue", "hak"], 50);
    src.run_until(&mut p, 10_050);
    let video = p.rendition_by_id("video").unwrap();
    let renditions = p.renditions();
    let vsegs: Vec<_> = renditions[video].segments().collect();
    assert!(vsegs.len() >= 4, "{} segments", vsegs.len());
    for s in &vsegs {
        assert!(
            (s.duration - 2.0).abs() < 1e-6,
            "video segment {} lasts {}",
            s.msn,
            s.duration
        );
        assert_eq!(s.frames, 50);
        let frags = fragments(mem(&s.data));
        assert_eq!(frags.len(), 5, "five 400 ms parts");
        assert!(frags.iter().all(|f| f.1 == 36_000 && f.2 == 10));
        assert_eq!(frags[0].3, media::fmp4::FLAGS_SYNC);
        for w in frags.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0, "video parts are contiguous");
        }
    }
    for lang in ["cmn", "yue", "hak"] {
        let a = p.rendition_by_id(&format!("audio-{lang}")).unwrap();
        let asegs: Vec<_> = renditions[a].segments().collect();
        assert_eq!(
            asegs.iter().map(|s| s.msn).collect::<Vec<_>>(),
            vsegs.iter().map(|s| s.msn).collect::<Vec<_>>()
        );
        let mut prev_end: Option<u64> = None;
        for (sa, sv) in asegs.iter().zip(&vsegs) {
            assert!(
                (sa.duration - sv.duration).abs() < 0.03,
                "audio {} vs video {}",
                sa.duration,
                sv.duration
            );
            assert_eq!(sa.parts.len(), sv.parts.len());
            for f in fragments(mem(&sa.data)) {
                if let Some(end) = prev_end {
                    assert_eq!(end, f.0, "audio is gapless across parts");
                }
                prev_end = Some(f.0 + f.1);
                // Each part's length is within one AAC frame of 400 ms.
                let secs = f.1 as f64 / 48_000.0;
                assert!(
                    (secs - 0.4).abs() <= 1024.0 / 48_000.0 + 1e-9,
                    "audio part {secs}"
                );
            }
        }
        // Audio and video start together: first audio sample within a frame of the video's.
        let v0 = fragments(mem(&vsegs[0].data))[0].0 as f64 / 90_000.0;
        let a0 = fragments(mem(&asegs[0].data))[0].0 as f64 / 48_000.0;
        assert!((v0 - a0).abs() < 0.025, "a/v start {a0} vs {v0}");
    }
}

#[test]
fn playlists_parse_and_report_renditions() {
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn", "yue"], 50);
    src.run_until(&mut p, 7_000);
    let v = p.rendition_by_id("video").unwrap();
    let text = p.media_playlist(v).unwrap();
    let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
    assert_eq!(pl.target_duration, 2);
    assert_eq!(pl.media_sequence, 0);
    assert!(pl.segments.len() >= 3);
    assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.281"));
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.427"));
    assert!(text.contains("#EXT-X-MAP:URI=\"init-t-0.mp4\""));
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2027-01-15T08:00:00.000Z"));
    assert!(text.contains("#EXT-X-RENDITION-REPORT:URI=\"../audio-cmn/index.m3u8\""));
    assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-t-"));
    // Every part listed is servable, every segment too.
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-PART:") {
            let uri = rest
                .split("URI=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let mut it = uri.trim_end_matches(".m4s").rsplit('-');
            let idx: u32 = it.next().unwrap().parse().unwrap();
            let msn: u64 = it.next().unwrap().parse().unwrap();
            assert!(p.part(v, msn, idx).is_some(), "{uri}");
        }
    }
    for s in &pl.segments {
        let msn: u64 = s
            .uri
            .trim_end_matches(".m4s")
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(p.segment(v, msn).is_some());
    }
    assert!(p.init(v, 0).is_some());
}

#[test]
fn a_closed_segments_parts_are_slices_of_its_bytes_not_copies() {
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn"], 50);
    src.run_until(&mut p, 10_050);
    let renditions = p.renditions();
    for id in ["video", "audio-cmn"] {
        let r = p.rendition_by_id(id).unwrap();
        let segs: Vec<_> = renditions[r].segments().collect();
        let with_parts: Vec<_> = segs.iter().filter(|s| !s.parts.is_empty()).collect();
        assert!(with_parts.len() >= 3, "{id}: segments with parts listed");
        for s in with_parts {
            let whole = mem(&s.data).as_ptr_range();
            let mut at = whole.start;
            for part in &s.parts {
                // The part is served from the segment's own memory, in order.
                assert_eq!(mem(&part.data).as_ptr(), at, "{id} segment {}", s.msn);
                at = at.wrapping_add(part.data.len());
            }
            assert_eq!(at, whole.end, "{id} segment {}: parts cover it", s.msn);
        }
    }
}

#[test]
fn window_slides() {
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn"], 50);
    src.run_until(&mut p, 40_000);
    let v = p.rendition_by_id("video").unwrap();
    let pl = m3u8_rs::parse_media_playlist_res(p.media_playlist(v).unwrap().as_bytes()).unwrap();
    assert_eq!(pl.segments.len(), 6);
    assert!(pl.media_sequence >= 13);
    // Old segments are gone, recent ones kept.
    assert!(p.segment(v, 0).is_none());
    assert!(p.segment(v, pl.media_sequence).is_some());
}

#[test]
fn blocking_reload_readiness() {
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn"], 50);
    src.run_until(&mut p, 2_100);
    let v = p.rendition_by_id("video").unwrap();
    // The keyframe at 2.0 s completed segment 0; segment 1's first part is still open.
    assert_eq!(p.renditions()[v].last_part(), Some((0, 4)));
    assert_eq!(p.renditions()[v].next_part(), (1, 0));
    assert_eq!(p.blocking_ready(v, 0, Some(4)), Readiness::Ready);
    assert_eq!(p.blocking_ready(v, 0, None), Readiness::Ready);
    assert_eq!(p.blocking_ready(v, 1, None), Readiness::Wait);
    assert_eq!(p.blocking_ready(v, 1, Some(0)), Readiness::Wait);
    assert_eq!(p.blocking_ready(v, 2, None), Readiness::Wait);
    assert_eq!(p.blocking_ready(v, 3, None), Readiness::TooFarAhead);
    // RFC 8216bis 6.2.5.2: parts more than the Advance Part Limit (3 s of parts) ahead of
    // the last one are refused at once, not held.
    assert_eq!(p.blocking_ready(v, 1, Some(2)), Readiness::Wait);
    assert_eq!(p.blocking_ready(v, 1, Some(9)), Readiness::TooFarAhead);
    assert_eq!(p.blocking_ready(v, 2, Some(0)), Readiness::Wait);
    assert_eq!(p.blocking_ready(v, 2, Some(4)), Readiness::TooFarAhead);
    assert!(p.part_upcoming(v, 1, 0));
    assert!(!p.part_upcoming(v, 7, 0));
    let before = p.version();
    src.run_until(&mut p, 2_500);
    assert!(p.version() > before);
    assert_eq!(p.blocking_ready(v, 1, Some(0)), Readiness::Ready);
    assert_eq!(p.blocking_ready(v, 1, Some(1)), Readiness::Wait);
    // A part index past the end of a finished segment means the next segment's first part.
    src.run_until(&mut p, 4_050);
    assert_eq!(p.renditions()[v].next_part(), (2, 0));
    assert_eq!(p.blocking_ready(v, 1, Some(5)), Readiness::Wait);
    assert_eq!(p.blocking_ready(v, 1, Some(4)), Readiness::Ready);
    src.run_until(&mut p, 4_500);
    assert_eq!(p.blocking_ready(v, 1, Some(5)), Readiness::Ready);
    assert_eq!(p.blocking_ready(v, 0, Some(9)), Readiness::Ready);
}

#[test]
fn publisher_restart_continues_with_discontinuity() {
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn", "yue"], 50);
    src.run_until(&mut p, 5_000);
    p.end_session();
    let v = p.rendition_by_id("video").unwrap();
    let before: Vec<_> = p.renditions()[v].segments().map(|s| s.msn).collect();
    let last_end = {
        let s = p.renditions()[v].segments().last().unwrap();
        let f = fragments(mem(&s.data));
        let l = f.last().unwrap();
        l.0 + l.1
    };
    // Playlists stay up during the gap, listing what was there.
    assert!(p.media_playlist(v).unwrap().contains("seg-t-2.m4s"));

    // The new publisher's clock starts somewhere else entirely.
    let mut src2 = Source::new(&mut p, true, &["cmn", "yue"], 50);
    src2.start_ms = 5;
    // It comes back 3 s after the first one left, 5 s in.
    src2.wall_ms = 8_000;
    src2.run_until(&mut p, 4_500);
    let rend = &p.renditions()[v];
    let after: Vec<_> = rend
        .segments()
        .filter(|s| !before.contains(&s.msn))
        .collect();
    assert!(!after.is_empty());
    assert!(after[0].discontinuity);
    assert!(after[1..].iter().all(|s| !s.discontinuity));
    assert_eq!(after[0].msn, before.last().unwrap() + 1);
    assert_eq!(after[0].dseq, 1);
    let first = fragments(mem(&after[0].data))[0].0;
    assert!(
        first >= last_end,
        "timeline continues: {first} >= {last_end}"
    );
    assert!(first - last_end < 90_000, "and does not leap");
    let text = p.media_playlist(v).unwrap();
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    // The same discontinuity on the audio rendition, at the same segment.
    let a = p.rendition_by_id("audio-yue").unwrap();
    let aseg = p.renditions()[a]
        .segments()
        .find(|s| s.msn == after[0].msn)
        .unwrap();
    assert!(aseg.discontinuity);
    let atext = p.media_playlist(a).unwrap();
    let pl = m3u8_rs::parse_media_playlist_res(atext.as_bytes()).unwrap();
    assert_eq!(pl.discontinuity_sequence, 0);
    // PDT jumps by the wall-clock gap at the discontinuity: re-anchored to when the new
    // session's first frame arrived.
    let pdt = aseg.pdt.duration_since(t0()).unwrap().as_millis();
    assert!((7_900..=8_100).contains(&pdt), "PDT {pdt} ms after t0");
    let vseg = &after[0];
    assert_eq!(vseg.pdt, aseg.pdt, "renditions share the segment's PDT");
}

#[test]
fn silent_dialect_is_filled_and_keeps_pace() {
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn", "yue"], 50);
    src.run_until(&mut p, 3_000);
    // yue's source goes quiet: only cmn keeps coming.
    let yue = p.rendition_by_id("audio-yue").unwrap();
    src.audio.retain(|&a| a != yue);
    src.run_until(&mut p, 9_000);
    let v = p.rendition_by_id("video").unwrap();
    let vlast = p.renditions()[v].last_part().unwrap();
    let ylast = p.renditions()[yue].last_part().unwrap();
    // Behind by at most the lag allowance (1.2 s = 3 parts).
    let index = |(m, i): (u64, u32)| m * 5 + i as u64;
    assert!(index(vlast) - index(ylast) <= 4, "{vlast:?} vs {ylast:?}");
    // The filled segments are real, gapless audio.
    let segs: Vec<_> = p.renditions()[yue].segments().collect();
    let mut prev: Option<u64> = None;
    for s in &segs {
        for f in fragments(mem(&s.data)) {
            if let Some(e) = prev {
                assert_eq!(e, f.0);
            }
            prev = Some(f.0 + f.1);
        }
    }
}

#[test]
fn audio_only_lecture_leads_by_time() {
    let mut p = packager();
    let mut src = Source::new(&mut p, false, &["cmn"], 50);
    src.run_until(&mut p, 8_000);
    let a = p.rendition_by_id("audio-cmn").unwrap();
    let segs: Vec<_> = p.renditions()[a].segments().collect();
    assert!(segs.len() >= 3);
    for s in &segs {
        assert!((s.duration - 2.0).abs() < 0.03, "{}", s.duration);
        let frags = fragments(mem(&s.data));
        for (i, f) in frags.iter().enumerate() {
            let secs = f.1 as f64 / 48_000.0;
            assert!(secs <= 0.44, "part {secs}");
            // RFC 8216bis: all but a segment's final part last at least 85 % of PART-TARGET.
            if i + 1 < frags.len() {
                assert!(secs >= 0.374, "part {secs}");
            }
        }
    }
}

#[test]
fn long_gop_is_cut_within_target_duration() {
    let mut p = packager();
    // OBS's default: a keyframe every ~8 s.
    let mut src = Source::new(&mut p, true, &["cmn"], 200);
    src.run_until(&mut p, 20_000);
    let v = p.rendition_by_id("video").unwrap();
    for s in p.renditions()[v].segments() {
        assert!(
            s.duration.round() as u64 <= p.target_duration(),
            "{}",
            s.duration
        );
    }
    let text = p.media_playlist(v).unwrap();
    assert!(text.contains("#EXT-X-TARGETDURATION:2\n"));
}

#[test]
fn after_a_cut_between_keyframes_segments_start_on_keyframes_again() {
    // Keyframes every 2 s, but one is missing (an encoder hiccup, a keyframe lost): that
    // segment must be cut without a keyframe; the next keyframe must start a segment even
    // though it comes early in it, so every later segment starts on a keyframe again.
    let mut p = packager();
    p.begin_session();
    let v = p.set_track("video", video_info(), None, String::new());
    for i in 0..500i64 {
        let key = i % 50 == 0 && i != 100;
        p.push(
            v,
            Frame {
                dts: i * 3600,
                pts: i * 3600,
                keyframe: key,
                data: Bytes::from_static(b"x"),
            },
            t0(),
        );
    }
    let segs: Vec<_> = p.renditions()[v].segments().collect();
    let later: Vec<_> = segs.iter().filter(|s| s.msn >= 3).collect();
    assert!(later.len() >= 3);
    for s in later {
        assert_eq!(
            fragments(mem(&s.data))[0].3,
            media::fmp4::FLAGS_SYNC,
            "segment {} starts without a keyframe",
            s.msn
        );
        assert!(
            (s.duration - 2.0).abs() < 0.05,
            "segment {}: {}",
            s.msn,
            s.duration
        );
    }
}

#[test]
fn frames_before_first_keyframe_and_backwards_dts_are_dropped() {
    let mut p = packager();
    p.begin_session();
    let v = p.set_track("video", video_info(), None, String::new());
    let f = |dts: i64, key: bool| Frame {
        dts,
        pts: dts,
        keyframe: key,
        data: Bytes::from_static(b"x"),
    };
    p.push(v, f(0, false), t0());
    p.push(v, f(3600, false), t0());
    assert!(p.renditions()[v].last_part().is_none());
    for i in 0..30 {
        p.push(v, f(7200 + i * 3600, i % 25 == 0), t0());
    }
    p.push(v, f(10, false), t0()); // far back in time
    for i in 30..80 {
        p.push(v, f(7200 + i * 3600, i % 25 == 0), t0());
    }
    let segs: Vec<_> = p.renditions()[v].segments().collect();
    assert_eq!(segs[0].frames, 50);
}

#[test]
fn finish_writes_endlist() {
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn"], 50);
    src.run_until(&mut p, 3_000);
    p.finish();
    let v = p.rendition_by_id("video").unwrap();
    let text = p.media_playlist(v).unwrap();
    assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    assert!(!text.contains("PRELOAD-HINT"));
    assert_eq!(p.blocking_ready(v, 99, None), Readiness::Ready);
    let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
    let total: f32 = pl.segments.iter().map(|s| s.duration).sum();
    assert!((total - 3.0).abs() < 0.1, "{total}");
}

#[test]
fn dialect_declared_after_first_keyframe_joins_the_first_segment() {
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &[], 50);
    src.run_until(&mut p, 700);
    let (info, lang) = audio_info("yue");
    let a = p.set_track("audio-yue", info, Some(lang), "粤语".into());
    src.audio.push(a);
    src.run_until(&mut p, 4_100);
    let v = p.rendition_by_id("video").unwrap();
    let vsegs: Vec<_> = p.renditions()[v]
        .segments()
        .map(|s| (s.msn, s.parts.len()))
        .collect();
    let asegs: Vec<_> = p.renditions()[a]
        .segments()
        .map(|s| (s.msn, s.parts.len()))
        .collect();
    assert_eq!(vsegs, asegs);
    // The first 0.7 s are silence, then the real frames; one gapless timeline from the start.
    let first = p.renditions()[a].segments().next().unwrap();
    let frags = fragments(mem(&first.data));
    let v0 = fragments(mem(&p.renditions()[v].segments().next().unwrap().data))[0].0;
    assert!((frags[0].0 as f64 / 48_000.0 - v0 as f64 / 90_000.0).abs() < 0.001);
    for w in frags.windows(2) {
        assert_eq!(w[0].0 + w[0].1, w[1].0);
    }
}

#[test]
fn video_declared_after_audio_still_leads() {
    // Like the GStreamer demo: audio is encoded faster, so its track and first frames arrive
    // before the video track is even declared, and video keeps arriving a second late.
    let mut p = packager();
    p.begin_session();
    let (info, lang) = audio_info("cmn");
    let a = p.set_track("audio-cmn", info, Some(lang), "cmn".into());
    let audio_frame = |i: i64| Frame {
        dts: i * 1024,
        pts: i * 1024,
        keyframe: true,
        data: Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
    };
    // 1 s of audio first.
    let mut ai = 0;
    while ai * 1024 < 48_000 {
        p.push(a, audio_frame(ai), t0());
        ai += 1;
    }
    let v = p.set_track("video", video_info(), None, String::new());
    for vi in 0..250i64 {
        let t = vi * 3600;
        p.push(
            v,
            Frame {
                dts: t,
                pts: t,
                keyframe: vi % 50 == 0,
                data: Bytes::from_static(b"v"),
            },
            t0(),
        );
        // audio runs a second ahead of video
        while ai * 1024 * 90_000 / 48_000 < t + 90_000 {
            p.push(a, audio_frame(ai), t0());
            ai += 1;
        }
    }
    let vsegs: Vec<_> = p.renditions()[v].segments().collect();
    assert!(vsegs.len() >= 4);
    assert!(
        vsegs.iter().all(|s| s.parts.iter().all(|p| !p.gap)),
        "video has gaps"
    );
    assert!(vsegs.iter().all(|s| (s.duration - 2.0).abs() < 1e-6));
    let asegs: Vec<_> = p.renditions()[a].segments().map(|s| s.msn).collect();
    assert_eq!(asegs, vsegs.iter().map(|s| s.msn).collect::<Vec<_>>());
}

#[test]
fn audio_clock_hours_away_from_video_is_realigned() {
    // A publisher whose video timestamps carry a 1000-hour offset that the audio lacks.
    let mut p = packager();
    p.begin_session();
    let v = p.set_track("video", video_info(), None, String::new());
    let (info, lang) = audio_info("cmn");
    let a = p.set_track("audio-cmn", info, Some(lang), "cmn".into());
    let hours = 1000 * 3600 * 90_000i64;
    let mut ai = 0i64;
    for vi in 0..150i64 {
        let t = vi * 3600;
        p.push(
            v,
            Frame {
                dts: hours + t,
                pts: hours + t,
                keyframe: vi % 50 == 0,
                data: Bytes::from_static(b"v"),
            },
            t0(),
        );
        while ai * 1024 * 90_000 / 48_000 <= t {
            p.push(
                a,
                Frame {
                    dts: ai * 1024,
                    pts: ai * 1024,
                    keyframe: true,
                    data: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7]),
                },
                t0(),
            );
            ai += 1;
        }
    }
    let real = p.renditions()[a]
        .segments()
        .flat_map(|s| fragments(mem(&s.data)))
        .count();
    assert!(real >= 10);
    // Nearly all samples are the real 7-byte frames, not 6-byte silence.
    let seg = p.renditions()[a].segments().nth(1).unwrap();
    let mut buf = &mem(&seg.data)[..];
    let moof = mp4_atom::Moof::decode(&mut buf).unwrap();
    let sizes: Vec<u32> = moof.traf[0].trun[0]
        .samples
        .iter()
        .map(|e| e.size.unwrap())
        .collect();
    assert!(
        sizes.iter().filter(|&&s| s == 7).count() >= sizes.len() - 1,
        "{sizes:?}"
    );
}

#[test]
fn a_contributed_dialect_joins_the_timeline_and_stays_as_silence() {
    let mut p = packager();
    let (info, lang) = audio_info("yue");
    let y = p.set_contributed_track("audio-yue", info, Some(lang), "粤语".into());
    let frame = |t: i64| Frame {
        dts: t,
        pts: t,
        keyframe: true,
        data: Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]),
    };
    // No publishing session yet: nothing to join, and it must not set the session's clock.
    assert!(p.push(y, frame(480_000), t0()).is_none());
    let mut src = Source::new(&mut p, true, &["cmn"], 50);
    src.run_until(&mut p, 3_000);
    let v = p.rendition_by_id("video").unwrap();
    let video_end = {
        let s = p.renditions()[v].segments().last().unwrap();
        let f = fragments(mem(&s.data));
        let l = f.last().unwrap();
        (l.0 + l.1) as i64
    };
    // The publisher's timeline was not moved by the early frame: it starts where the
    // packager puts a first session.
    assert!(video_end > 10 * 90_000, "{video_end}");
    // One second of interpretation from where the lecture is now (48 kHz lecture time).
    let start = media::model::rescale(video_end, 90_000, 48_000);
    for i in 0..47 {
        assert!(p.push(y, frame(start + i * 1024), t0()).is_some());
    }
    src.run_until(&mut p, 9_000);
    let yue: Vec<_> = p.renditions()[y].segments().map(|s| s.msn).collect();
    let video: Vec<_> = p.renditions()[v].segments().map(|s| s.msn).collect();
    assert!(yue.len() >= 3, "{yue:?}");
    // A silent follower is closed once the leader is `follower_max_lag` ahead, so it is at
    // most one segment behind.
    assert!(
        yue.last().unwrap() + 1 >= *video.last().unwrap(),
        "the contributed dialect keeps up with the lecture after its source left: {yue:?} vs {video:?}"
    );
    // Every segment of it is whole: voice, then silence, never a hole.
    for s in p.renditions()[y].segments().filter(|s| s.msn > yue[0]) {
        let total: u64 = fragments(mem(&s.data)).iter().map(|f| f.1).sum();
        assert!(
            (total as f64 / 48_000.0 - s.duration).abs() < 0.03,
            "segment {}: {} samples for {} s",
            s.msn,
            total,
            s.duration
        );
    }
}

#[test]
fn gaps_stay_marked_for_the_whole_window_and_are_not_served() {
    // A lecture with video, then a publisher that sends sound only: the video rendition
    // goes on as gaps, listed with EXT-X-GAP for as long as they are in the playlist, and
    // a gap segment is not served (an empty 200 would be cached as media for a year).
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn"], 50);
    src.run_until(&mut p, 4_000);
    p.end_session();
    let mut audio_only = Source::new(&mut p, false, &["cmn"], 50);
    audio_only.wall_ms = 5_000;
    audio_only.run_until(&mut p, 30_000);
    let v = p.rendition_by_id("video").unwrap();
    let text = p.media_playlist(v).unwrap();
    let listed: Vec<(bool, u64)> = {
        let mut out = Vec::new();
        let mut gap = false;
        for line in text.lines() {
            if line == "#EXT-X-GAP" {
                gap = true;
            } else if let Some(uri) = line.strip_prefix("seg-t-") {
                out.push((gap, uri.trim_end_matches(".m4s").parse().unwrap()));
                gap = false;
            }
        }
        out
    };
    assert_eq!(listed.len(), 6, "{text}");
    for (gap, msn) in &listed {
        assert!(
            gap,
            "segment {msn} of the audio-only session lost its EXT-X-GAP:\n{text}"
        );
        assert!(p.segment(v, *msn).is_none(), "gap segment {msn} is served");
        let seg = p.renditions()[v]
            .segments()
            .find(|s| s.msn == *msn)
            .unwrap();
        assert!(seg.gap);
    }
    // The dialect itself is real audio throughout.
    let a = p.rendition_by_id("audio-cmn").unwrap();
    assert!(p.renditions()[a].segments().all(|s| !s.gap));
}

/// A WHIP publisher's first second as a relay that trusted its first sender reports placed
/// it (live777's `whipinto`: reports before any packet, their RTP time counted from zero):
/// each track `*_wild` ticks (of its own timescale) off in its first second, then both on
/// their true clock. Returns what `push` placed per rendition.
fn wild_first_second(
    p: &mut Packager,
    v: RenditionIdx,
    a: RenditionIdx,
    audio_wild: i64,
    video_wild: i64,
) -> (Vec<i64>, Vec<i64>) {
    let aac = |dts: i64| Frame {
        dts,
        pts: dts,
        keyframe: true,
        data: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7]),
    };
    let (mut placed_v, mut placed_a) = (Vec::new(), Vec::new());
    let mut ai = 0i64;
    for vi in 0..400i64 {
        // 25 fps, a keyframe every 2 s; the first second on the wild clock.
        let wild = vi < 25;
        let t = vi * 3600 + if wild { video_wild } else { 0 };
        let now = t0() + Duration::from_millis(vi as u64 * 40);
        // Audio up to this frame's time first (it comes sooner out of the encoders).
        while ai * 1024 * 90_000 / 48_000 <= vi * 3600 {
            let wild = ai < 47;
            let t = ai * 1024 + if wild { audio_wild } else { 0 };
            if let Some(x) = p.push(a, aac(t), now) {
                placed_a.push(x.dts);
            }
            ai += 1;
        }
        if let Some(x) = p.push(
            v,
            Frame {
                dts: t,
                pts: t,
                keyframe: vi % 50 == 0,
                data: Bytes::from(vec![if vi % 50 == 0 { 0x65 } else { 0x41 }; 100]),
            },
            now,
        ) {
            placed_v.push(x.dts);
        }
    }
    (placed_v, placed_a)
}

fn av_packager() -> (Packager, RenditionIdx, RenditionIdx) {
    let mut p = packager();
    p.begin_session();
    let (info, lang) = audio_info("cmn");
    let a = p.set_track("audio-cmn", info, Some(lang), "cmn".into());
    let v = p.set_track("video", video_info(), None, String::new());
    (p, v, a)
}

#[test]
fn a_first_frame_on_a_wild_clock_does_not_keep_the_lecture_from_starting() {
    // The audio's first frames come first, 18,987 s ahead of the clock both tracks then
    // keep: the session's timeline was set by them, and every video frame fell before it.
    let (mut p, v, a) = av_packager();
    let (placed_v, placed_a) = wild_first_second(&mut p, v, a, 911_359_291, 0);
    let vsegs: Vec<_> = p.renditions()[v].segments().collect();
    assert!(vsegs.len() >= 6, "{} video segments", vsegs.len());
    assert!(vsegs.iter().all(|s| !s.gap && s.frames == 50));
    assert_eq!(placed_v.len(), 400, "every video frame placed");
    assert!(placed_v.windows(2).all(|w| w[1] - w[0] == 3600));
    // The audio follows the video once on its true clock.
    let last_a = *placed_a.last().unwrap() as f64 / 48_000.0;
    let last_v = *placed_v.last().unwrap() as f64 / 90_000.0;
    assert!(
        (last_a - last_v).abs() < 0.1,
        "audio {last_a} video {last_v}"
    );
}

#[test]
fn a_leader_whose_clock_jumps_back_goes_on() {
    // The video's first second (its first keyframe with it) on a clock 8,778 s ahead,
    // then its true one: every frame after the jump went back in time.
    let (mut p, v, a) = av_packager();
    let (placed_v, placed_a) = wild_first_second(&mut p, v, a, 0, 790_065_828);
    // One frame is held as evidence of the jump; every other one is placed, in order, a
    // frame apart across the jump.
    assert_eq!(placed_v.len(), 399, "video frames placed");
    assert!(
        placed_v
            .windows(2)
            .all(|w| w[1] - w[0] == 3600 || w[1] - w[0] == 7200),
        "{:?}",
        placed_v.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    );
    let vsegs: Vec<_> = p.renditions()[v].segments().collect();
    assert!(vsegs.len() >= 6, "{} video segments", vsegs.len());
    assert!(vsegs.iter().all(|s| !s.gap));
    let last_a = *placed_a.last().unwrap() as f64 / 48_000.0;
    let last_v = *placed_v.last().unwrap() as f64 / 90_000.0;
    assert!(
        (last_a - last_v).abs() < 0.2,
        "audio {last_a} video {last_v}"
    );
}

#[test]
fn one_stray_leader_frame_an_hour_ahead_is_dropped() {
    // Not a pause (the wall clock moved 40 ms): cutting an hour of gaps for it, then
    // dropping every later frame as going back in time, would end the lecture's picture.
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &["cmn"], 50);
    src.run_until(&mut p, 3_000);
    let v = src.video.unwrap();
    let hour = 3600 * 90_000;
    let now = t0() + Duration::from_millis(3_020);
    assert!(
        p.push(
            v,
            Frame {
                dts: (src.start_ms + 3_020) * 90 + hour,
                pts: (src.start_ms + 3_020) * 90 + hour,
                keyframe: false,
                data: Bytes::from_static(&[0x41; 10]),
            },
            now,
        )
        .is_none()
    );
    src.run_until(&mut p, 9_000);
    let vsegs: Vec<_> = p.renditions()[v].segments().collect();
    assert!(vsegs.iter().all(|s| !s.gap), "gaps cut for the stray frame");
    let total: f64 = vsegs.iter().map(|s| s.duration).sum();
    assert!((7.9..=9.1).contains(&total), "{total} s of video");
}

#[test]
fn a_dialect_realigned_back_is_placed_at_once() {
    // The audio's clock runs ahead of the video's (9.5 s, then 10.5 s): realigned back to
    // the video, its frames are placed from the moment of the realignment, not dropped as
    // late until its timeline catches up with where it had been (10 s of silence in HLS and
    // over WebRTC).
    let mut p = packager();
    let mut src = Source::new(&mut p, true, &[], 50);
    let (info, lang) = audio_info("cmn");
    let a = p.set_track("audio-cmn", info, Some(lang), "cmn".into());
    let mut placed = Vec::new();
    let mut ai = 0i64;
    for step in 0..(12_000 / 40) {
        let ms = step * 40;
        src.run_until(&mut p, ms);
        let now = t0() + Duration::from_millis(ms as u64);
        while ai * 1024 * 1000 / 48_000 <= ms {
            let ahead_ms = match ai * 1024 * 1000 / 48_000 {
                0..3_000 => 0,
                3_000..5_000 => 9_500,
                _ => 10_500,
            };
            let dts = (src.start_ms + ahead_ms) * 48 + ai * 1024;
            let frame = Frame {
                dts,
                pts: dts,
                keyframe: true,
                data: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7]),
            };
            placed.push((ai, p.push(a, frame, now).map(|x| x.dts)));
            ai += 1;
        }
    }
    let after: Vec<_> = placed
        .iter()
        .filter(|(i, _)| *i * 1024 * 1000 / 48_000 >= 5_000)
        .collect();
    assert!(
        after.iter().all(|(_, x)| x.is_some()),
        "{} of {} frames after the realignment dropped",
        after.iter().filter(|(_, x)| x.is_none()).count(),
        after.len()
    );
    // And they follow the video: in step with it by the end.
    let v = src.video.unwrap();
    let vend = p.renditions()[v].segments().last().unwrap();
    let aend = p.renditions()[a].segments().last().unwrap();
    assert_eq!(vend.msn, aend.msn);
    let aframes = fragments(mem(&aend.data));
    assert!(
        aframes.iter().map(|f| f.2).sum::<usize>() > 80,
        "{aframes:?}"
    );
}

#[test]
fn the_windows_older_segments_are_spooled_and_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let spooler = crate::hls::spool::Spooler::start(dir.path().to_path_buf()).unwrap();
    let mut p = Packager::new(
        Settings::from_ms(400, 2000, 6).with_spool(spooler.clone(), 2),
        "t".into(),
    );
    let mut src = Source::new(&mut p, true, &["cmn", "yue"], 50);
    // Every segment's and part's bytes while they were still in memory.
    let mut seen: std::collections::HashMap<(usize, u64), (Bytes, Vec<Bytes>)> = Default::default();
    for t in (2_000..=40_000).step_by(1_000) {
        src.run_until(&mut p, t);
        for (r, rend) in p.renditions().iter().enumerate() {
            for s in rend.segments() {
                if let Some(b) = s.data.in_memory() {
                    let parts = s.parts.iter().map(|x| mem(&x.data).clone()).collect();
                    seen.entry((r, s.msn)).or_insert((b.clone(), parts));
                }
            }
        }
        // The spool thread writes while the lecture goes on (here far faster than real time).
        spooler.flush();
    }
    assert!(
        spooler
            .stats()
            .written
            .load(std::sync::atomic::Ordering::Relaxed)
            > 10
    );
    for (r, rend) in p.renditions().iter().enumerate() {
        let segs: Vec<_> = rend.segments().collect();
        assert_eq!(segs.len(), 8, "{}: the window and two more", rend.id);
        let newest: Vec<_> = segs.iter().rev().take(2).collect();
        for s in &newest {
            assert!(
                s.data.in_memory().is_some(),
                "{} {} in memory",
                rend.id,
                s.msn
            );
        }
        // Behind the newest two (and the one handed to the spooler in this step), in files.
        for s in segs.iter().rev().skip(3) {
            assert!(
                s.data.in_memory().is_none(),
                "{} {} spooled",
                rend.id,
                s.msn
            );
        }
        for s in &segs {
            let (bytes, parts) = &seen[&(r, s.msn)];
            let served = p.segment(r, s.msn).unwrap().read().unwrap();
            assert_eq!(&served, bytes, "{} segment {}", rend.id, s.msn);
            for (i, part) in s.parts.iter().enumerate() {
                let served = p.part(r, s.msn, part.index).unwrap().read().unwrap();
                assert_eq!(
                    served, parts[i],
                    "{} part {}.{}",
                    rend.id, s.msn, part.index
                );
            }
        }
        // Parts of a spooled segment are still served (a player a little behind).
        assert!(
            segs.iter()
                .any(|s| s.data.in_memory().is_none() && !s.parts.is_empty()),
            "{}: some spooled segment still has its parts",
            rend.id
        );
    }
    // The files have no names: nothing is left in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // The playlist is the same as without the spool.
    let v = p.rendition_by_id("video").unwrap();
    let pl = m3u8_rs::parse_media_playlist_res(p.media_playlist(v).unwrap().as_bytes()).unwrap();
    assert_eq!(pl.segments.len(), 6);
}
