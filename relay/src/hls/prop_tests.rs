//! Property tests of the packager against RFC 8216bis's playlist rules, on publishers with
//! jittered timestamps and arrival times, and with the video pausing while the audio goes on.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use media::aac::AacParams;
use media::h264::H264Params;
use media::{CodecParams, Frame, Language, TrackInfo};
use proptest::prelude::*;

use super::packager::{Packager, RenditionIdx, Settings};

const SPS: &[u8] = &[
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
const AAC: &[u8] = &[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c, 0x07];

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// What a publisher does, in milliseconds of its own clock.
#[derive(Debug, Clone)]
struct Script {
    fps: f64,
    /// Keyframe every this many frames.
    gop: u32,
    part_ms: u64,
    dialects: usize,
    sample_rate: u32,
    /// Video frames in `[from, to)` never arrive; the first one after it is a keyframe when
    /// `resume_on_keyframe` (SRT, RTSP and WHIP wait for one after a loss).
    video_gap: Option<(f64, f64)>,
    resume_on_keyframe: bool,
    /// Timestamp jitter (ms) of each frame, and arrival jitter (ms) between the tracks.
    jitter: Vec<(i8, u8)>,
    duration_ms: f64,
}

struct Event {
    arrival_ms: f64,
    rendition: RenditionIdx,
    frame: Frame,
}

/// The frames of `script` in the order they arrive.
fn events(p: &mut Packager, s: &Script) -> (RenditionIdx, Vec<RenditionIdx>, Vec<Event>) {
    p.begin_session();
    let video = p.set_track(
        "video",
        TrackInfo::new(CodecParams::H264(
            H264Params::from_sps_pps(SPS, PPS).unwrap(),
        )),
        None,
        String::new(),
    );
    let audio: Vec<RenditionIdx> = ["cmn", "yue", "hak"][..s.dialects]
        .iter()
        .map(|l| {
            let lang = Language::parse(l).unwrap();
            let mut info =
                TrackInfo::new(CodecParams::Aac(AacParams::lc(s.sample_rate, 2).unwrap()));
            info.language = Some(lang.clone());
            p.set_track(&format!("audio-{l}"), info, Some(lang), l.to_string())
        })
        .collect();
    let jitter = |i: usize| s.jitter[i % s.jitter.len()];
    let start = 54_321.0;
    let mut out = Vec::new();
    let frame_ms = 1000.0 / s.fps;
    let mut resumed = false;
    let mut video_arrival = f64::MIN;
    let mut i = 0u32;
    loop {
        let t = i as f64 * frame_ms;
        if t > s.duration_ms {
            break;
        }
        let in_gap = s.video_gap.is_some_and(|(a, b)| t >= a && t < b);
        if in_gap {
            resumed = false;
        } else {
            let after_gap = s.video_gap.is_some_and(|(_, b)| t >= b) && !resumed;
            resumed |= after_gap;
            let key = i.is_multiple_of(s.gop) || (after_gap && s.resume_on_keyframe);
            let (tj, aj) = jitter(i as usize);
            // Millisecond timestamps (RTMP's), off by a millisecond at times.
            let dts = ((start + t).round() as i64 + (tj as i64 % 2)) * 90;
            // A track's own frames never overtake each other (TCP, or a jitter buffer).
            video_arrival = video_arrival.max(t + aj as f64);
            out.push(Event {
                arrival_ms: video_arrival,
                rendition: video,
                frame: Frame {
                    dts,
                    pts: dts + 3600,
                    keyframe: key,
                    data: Bytes::from(vec![if key { 0x65 } else { 0x41 }; 300]),
                },
            });
        }
        i += 1;
    }
    let audio_ms = 1024.0 * 1000.0 / s.sample_rate as f64;
    let rate = s.sample_rate as i64;
    let mut k = 0usize;
    let mut audio_arrival = f64::MIN;
    loop {
        let t = k as f64 * audio_ms;
        if t > s.duration_ms {
            break;
        }
        let (tj, aj) = jitter(k + 7);
        let ms = (start + t).round() as i64 + (tj as i64 % 2);
        audio_arrival = audio_arrival.max(t + (aj / 2) as f64);
        for &a in &audio {
            out.push(Event {
                arrival_ms: audio_arrival,
                rendition: a,
                frame: Frame {
                    dts: ms * rate / 1000,
                    pts: ms * rate / 1000,
                    keyframe: true,
                    data: Bytes::from_static(AAC),
                },
            });
        }
        k += 1;
    }
    // The tracks interleave by arrival (a stable sort keeps each track's order).
    out.sort_by(|a, b| a.arrival_ms.total_cmp(&b.arrival_ms));
    (video, audio, out)
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (_, attrs) = line.split_once(':')?;
    attrs.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v.trim_matches('"'))
    })
}

/// Checks one media playlist against RFC 8216bis: every part at most `PART-TARGET`, every
/// part but a segment's last at least 85 % of it, `PART-HOLD-BACK` at least three times it,
/// every `EXTINF` rounding to at most `EXT-X-TARGETDURATION`, parts listed only within three
/// target durations of the end.
fn check_playlist(text: &str) -> Result<(), String> {
    let mut part_target = None;
    let mut hold_back = None;
    let mut target = None;
    // Durations of the parts since the last EXTINF.
    let mut parts: Vec<f64> = Vec::new();
    let mut all_parts: Vec<f64> = Vec::new();
    let mut durations_after_first_part = 0.0;
    let mut first_part_seen = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = Some(v.parse::<f64>().map_err(|e| e.to_string())?);
        } else if line.starts_with("#EXT-X-PART-INF:") {
            part_target = attr(line, "PART-TARGET").map(|v| v.parse::<f64>().unwrap());
        } else if line.starts_with("#EXT-X-SERVER-CONTROL:") {
            hold_back = attr(line, "PART-HOLD-BACK").map(|v| v.parse::<f64>().unwrap());
        } else if line.starts_with("#EXT-X-PART:") {
            let d: f64 = attr(line, "DURATION").unwrap().parse().unwrap();
            parts.push(d);
            all_parts.push(d);
            first_part_seen = true;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d: f64 = v.trim_end_matches(',').parse().unwrap();
            let td = target.ok_or("no target duration")?;
            if d.round() > td {
                return Err(format!("EXTINF {d} above TARGETDURATION {td}"));
            }
            let pt = part_target.ok_or("no part target")?;
            for (i, p) in parts.iter().enumerate() {
                if i + 1 < parts.len() && *p < 0.85 * pt - 1e-9 {
                    return Err(format!(
                        "non-final part of {p} s is under 85 % of PART-TARGET {pt}"
                    ));
                }
            }
            if first_part_seen {
                durations_after_first_part += d;
            }
            parts.clear();
        }
    }
    let pt = part_target.ok_or("no part target")?;
    let hb = hold_back.ok_or("no part hold back")?;
    if hb < 3.0 * pt - 1e-9 {
        return Err(format!("PART-HOLD-BACK {hb} under 3 x PART-TARGET {pt}"));
    }
    for d in &all_parts {
        if *d > pt + 1e-9 {
            return Err(format!("part of {d} s above PART-TARGET {pt}"));
        }
    }
    // The first part listed belongs to a segment at most three target durations from the
    // end (RFC 8216bis 6.2.2: older EXT-X-PART tags are removed).
    let open: f64 = parts.iter().sum();
    let td = target.unwrap();
    if durations_after_first_part + open > 3.0 * td + pt + 1e-6 {
        return Err(format!(
            "parts listed {:.3} s from the end (> 3 target durations)",
            durations_after_first_part + open
        ));
    }
    Ok(())
}

/// Wall-clock end of the last part of rendition `r`.
fn last_part_end(p: &Packager, r: RenditionIdx) -> Option<SystemTime> {
    p.renditions()[r].live_edge()
}

fn run(s: &Script) -> Result<(), TestCaseError> {
    let mut p = Packager::new(Settings::from_ms(s.part_ms, 2000, 6), "t".into());
    let (video, audio, events) = events(&mut p, s);
    let frame_ms = 1000.0 / s.fps;
    let lag = Settings::from_ms(s.part_ms, 2000, 6).follower_max_lag as f64 / 90.0;
    let mut next_check = 1000.0;
    for e in events {
        let now = t0() + Duration::from_secs_f64(e.arrival_ms.max(0.0) / 1000.0);
        p.push(e.rendition, e.frame, now);
        if e.arrival_ms >= next_check {
            next_check += 97.0;
            for r in 0..p.renditions().len() {
                if let Some(text) = p.media_playlist(r)
                    && p.has_media(r)
                {
                    // What players get (rendered once per version) is what a fresh render
                    // says: no change escapes the version.
                    let served = p.media_playlist_bytes(r).unwrap();
                    prop_assert_eq!(
                        std::str::from_utf8(&served).unwrap_or("(not UTF-8)"),
                        text.as_str(),
                        "stale cached playlist"
                    );
                    check_playlist(&text).map_err(|m| {
                        TestCaseError::fail(format!(
                            "{} at {:.0} ms: {m}\n{text}",
                            p.renditions()[r].id,
                            e.arrival_ms
                        ))
                    })?;
                }
            }
            // The dialects keep growing while the video pauses: never further behind the
            // arrivals than the lag allowance and a couple of parts.
            if e.arrival_ms > 2500.0 {
                for &a in &audio {
                    let end = last_part_end(&p, a).expect("audio has parts");
                    let behind = now.duration_since(end).unwrap_or_default().as_secs_f64();
                    let allowed = (lag + 2.0 * s.part_ms as f64 + 2.0 * frame_ms) / 1000.0;
                    prop_assert!(
                        behind <= allowed,
                        "{} stalls: its last part ends {behind:.3} s before now ({:.0} ms)",
                        p.renditions()[a].id,
                        e.arrival_ms
                    );
                }
            }
        }
    }
    // Every rendition went through the same segments with the same parts.
    let shape = |r: RenditionIdx| -> Vec<(u64, usize)> {
        p.renditions()[r]
            .segments()
            .map(|s| (s.msn, s.parts.len()))
            .collect()
    };
    let vshape = shape(video);
    for &a in &audio {
        for s in shape(a) {
            if let Some(v) = vshape.iter().find(|v| v.0 == s.0) {
                prop_assert_eq!(*v, s, "segment {} differs", s.0);
            }
        }
    }
    if let Some((from, to)) = s.video_gap {
        // The video's pause is marked as gaps, roughly its length, and media follows it.
        let gap: f64 = p.renditions()[video]
            .segments()
            .flat_map(|s| s.parts.iter())
            .filter(|x| x.gap)
            .map(|x| x.duration)
            .sum();
        let pause = (to - from) / 1000.0;
        prop_assert!(
            gap >= pause - lag / 1000.0 - 2.0 * s.part_ms as f64 / 1000.0,
            "only {gap:.3} s of the video's {pause:.3} s pause is marked as gap"
        );
        let last = p.renditions()[video].segments().last().unwrap();
        prop_assert!(!last.gap, "video did not come back");
    }
    Ok(())
}

fn jitter() -> impl Strategy<Value = Vec<(i8, u8)>> {
    prop::collection::vec((any::<i8>(), 0u8..60), 1..64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn video_pausing_while_audio_goes_on(
        jitter in jitter(),
        resume_on_keyframe in any::<bool>(),
        dialects in 1usize..=3,
    ) {
        run(&Script {
            fps: 25.0,
            gop: 50,
            part_ms: 400,
            dialects,
            sample_rate: 48_000,
            video_gap: Some((3000.0, 5000.0)),
            resume_on_keyframe,
            jitter,
            duration_ms: 12_000.0,
        })?;
    }

    #[test]
    fn parts_obey_the_rfc_at_any_frame_rate_and_part_target(
        jitter in jitter(),
        fps in prop::sample::select(vec![12.0, 15.0, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0]),
        part_ms in prop::sample::select(vec![300u64, 333, 400, 500, 1000]),
        gop_s in 1u32..=4,
        sample_rate in prop::sample::select(vec![44_100u32, 48_000]),
    ) {
        run(&Script {
            fps,
            gop: (fps * gop_s as f64).round() as u32,
            part_ms,
            dialects: 2,
            sample_rate,
            video_gap: None,
            resume_on_keyframe: true,
            jitter,
            duration_ms: 9_000.0,
        })?;
    }
}
