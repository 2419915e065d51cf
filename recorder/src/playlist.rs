//! A recording as HLS: a multivariant playlist with one `EXT-X-MEDIA` rendition per dialect
//! (`LANGUAGE`, `NAME`), like the live one, and a media playlist per rendition: `VOD` with
//! `EXT-X-ENDLIST` once the lecture is over, `EVENT` while it is still being recorded (a
//! latecomer starts from the beginning and catches up).

use std::collections::BTreeMap;

use media::m3u8::{self, AudioRendition, MediaPlaylist, PlaylistType, SegmentLine, Variant};

use crate::meta::Meta;
use crate::store::Rendition;

/// Group id of the dialect renditions.
pub const AUDIO_GROUP: &str = "dialects";

/// The rendition every other one is laid out against: the video, else the first dialect.
fn timeline(meta: &Meta) -> Option<&str> {
    meta.renditions
        .iter()
        .find(|r| r.is_video())
        .or_else(|| meta.renditions.first())
        .map(|r| r.id.as_str())
}

/// Segments a playlist lists: all of them once recording is over, only complete ones while
/// it goes on (a segment in progress still grows).
fn listed(r: &Rendition, live: bool) -> impl Iterator<Item = &crate::store::Segment> {
    r.segments.iter().filter(move |s| !live || s.complete)
}

/// Peak bits per second of one segment of a rendition.
fn peak_bitrate(r: &Rendition) -> Option<u64> {
    r.segments
        .iter()
        .filter(|s| s.duration > 0.5 && !s.gap)
        .map(|s| (s.len as f64 * 8.0 / s.duration) as u64)
        .max()
}

/// The media playlist of `rendition`; `None` if it has nothing to list.
pub fn media(
    meta: &Meta,
    renditions: &BTreeMap<String, Rendition>,
    rendition: &str,
    live: bool,
) -> Option<String> {
    let r = renditions.get(rendition)?;
    let mut lines: Vec<SegmentLine> = Vec::new();
    // A dialect that joined later (an interpreter) is laid out on the same timeline from
    // the start: the time before it is gaps, so players switching to it stay in step.
    if let Some(first) = listed(r, live).next()
        && let Some(t) = timeline(meta).filter(|t| *t != rendition)
        && let Some(tr) = renditions.get(t)
    {
        for s in listed(tr, live).take_while(|s| s.msn < first.msn) {
            lines.push(SegmentLine {
                duration: s.duration,
                uri: format!("seg-{}.m4s", s.msn),
                discontinuity: false,
                map_uri: format!("init-{}.mp4", first.init),
                program_date_time: Some(s.pdt),
                parts: Vec::new(),
                gap: true,
            });
        }
    }
    let mut prev: Option<(u64, u64)> = None;
    let mut first_dseq = None;
    for s in listed(r, live) {
        first_dseq.get_or_insert(s.dseq - u64::from(s.discontinuity));
        // A new publishing session, or segments missing (writing stopped and resumed).
        let discontinuity = match prev {
            Some((msn, dseq)) => s.dseq != dseq || s.msn != msn + 1,
            None => !lines.is_empty() && s.discontinuity,
        };
        prev = Some((s.msn, s.dseq));
        lines.push(SegmentLine {
            duration: s.duration,
            uri: format!("seg-{}.m4s", s.msn),
            discontinuity,
            map_uri: format!("init-{}.mp4", s.init),
            program_date_time: Some(s.pdt),
            parts: Vec::new(),
            gap: s.gap || s.len == 0,
        });
    }
    if lines.is_empty() {
        return None;
    }
    let media_sequence = lines
        .first()
        .and_then(|l| {
            l.uri
                .strip_prefix("seg-")?
                .strip_suffix(".m4s")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let target_duration = lines
        .iter()
        .map(|l| l.duration.round() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    Some(m3u8::render_media(&MediaPlaylist {
        playlist_type: Some(if live {
            PlaylistType::Event
        } else {
            PlaylistType::Vod
        }),
        target_duration,
        part_target: None,
        media_sequence,
        discontinuity_sequence: first_dseq.unwrap_or(0),
        segments: lines,
        open_parts: Vec::new(),
        open_discontinuity: false,
        open_map_uri: None,
        open_program_date_time: None,
        preload_hint: None,
        rendition_reports: Vec::new(),
        ended: !live,
    }))
}

/// The multivariant playlist; `rank` orders the dialects (the configured order).
pub fn multivariant(
    meta: &Meta,
    renditions: &BTreeMap<String, Rendition>,
    rank: impl Fn(&str) -> usize,
) -> Option<String> {
    let has = |id: &str| renditions.get(id).is_some_and(|r| !r.segments.is_empty());
    let video = meta.renditions.iter().find(|r| r.is_video() && has(&r.id));
    let mut audio: Vec<_> = meta
        .renditions
        .iter()
        .filter(|r| !r.is_video() && has(&r.id))
        .collect();
    audio.sort_by_key(|r| r.language.as_deref().map_or(usize::MAX, &rank));
    let default = audio
        .iter()
        .position(|r| r.language.as_deref() == Some(meta.default_language.as_str()))
        .unwrap_or(0);
    let groups: Vec<AudioRendition> = audio
        .iter()
        .enumerate()
        .map(|(n, r)| AudioRendition {
            group_id: AUDIO_GROUP.into(),
            name: if r.name.is_empty() {
                r.language.clone().unwrap_or_default()
            } else {
                r.name.clone()
            },
            language: r.language.clone().unwrap_or_else(|| "und".into()),
            default: n == default,
            autoselect: true,
            channels: r.channels,
            uri: format!("{}/index.m3u8", r.id),
        })
        .collect();
    let audio_peak = audio
        .iter()
        .filter_map(|r| peak_bitrate(renditions.get(&r.id)?))
        .max()
        .unwrap_or(0);
    let mut codecs: Vec<String> = Vec::new();
    for c in video.iter().chain(audio.iter()).map(|r| r.codec.clone()) {
        if !codecs.contains(&c) {
            codecs.push(c);
        }
    }
    let variant = match video {
        Some(v) => Variant {
            bandwidth: renditions.get(&v.id).and_then(peak_bitrate).unwrap_or(0) + audio_peak,
            average_bandwidth: None,
            codecs: codecs.join(","),
            resolution: v.width.zip(v.height),
            frame_rate: None,
            audio_group: (!audio.is_empty()).then(|| AUDIO_GROUP.to_string()),
            uri: format!("{}/index.m3u8", v.id),
        },
        None => Variant {
            bandwidth: audio_peak,
            average_bandwidth: None,
            codecs: codecs.join(","),
            resolution: None,
            frame_rate: None,
            audio_group: Some(AUDIO_GROUP.to_string()),
            uri: format!("{}/index.m3u8", audio.get(default)?.id),
        },
    };
    Some(m3u8::render_multivariant(&groups, &[variant]))
}
