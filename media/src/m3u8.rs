//! Writing HLS playlists (RFC 8216bis), including the Low-Latency HLS tags: `EXT-X-PART`,
//! `EXT-X-PART-INF`, `EXT-X-PRELOAD-HINT`, `EXT-X-SERVER-CONTROL`, `EXT-X-RENDITION-REPORT`.
//!
//! Attribute values that come from users (rendition names) are quoted-string safe: characters
//! a quoted-string cannot hold (`"`, CR, LF) are replaced.

use std::fmt::Write as _;
use std::time::SystemTime;

/// An `EXT-X-MEDIA:TYPE=AUDIO` rendition of the multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioRendition {
    /// `GROUP-ID`.
    pub group_id: String,
    /// `NAME`: what a player shows (普通话, 粤语, 客家话).
    pub name: String,
    /// `LANGUAGE`: BCP-47 tag.
    pub language: String,
    /// `DEFAULT=YES` on exactly one rendition of the group.
    pub default: bool,
    /// `AUTOSELECT=YES`: the player may pick it by the device language.
    pub autoselect: bool,
    /// `CHANNELS`, when known.
    pub channels: Option<u16>,
    /// URI of its media playlist.
    pub uri: String,
}

/// An `EXT-X-STREAM-INF` variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// `BANDWIDTH` (peak bits per second, including the audio group's largest rendition).
    pub bandwidth: u64,
    /// `AVERAGE-BANDWIDTH`, when measured.
    pub average_bandwidth: Option<u64>,
    /// `CODECS`, comma separated.
    pub codecs: String,
    /// `RESOLUTION`.
    pub resolution: Option<(u32, u32)>,
    /// `FRAME-RATE`.
    pub frame_rate: Option<f64>,
    /// `AUDIO` group id.
    pub audio_group: Option<String>,
    /// URI of the media playlist.
    pub uri: String,
}

/// Renders a multivariant playlist.
pub fn render_multivariant(audio: &[AudioRendition], variants: &[Variant]) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
    for r in audio {
        let _ = write!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{}\",NAME=\"{}\",LANGUAGE=\"{}\",DEFAULT={},AUTOSELECT={}",
            quoted(&r.group_id),
            quoted(&r.name),
            quoted(&r.language),
            yes_no(r.default),
            yes_no(r.autoselect),
        );
        if let Some(ch) = r.channels {
            let _ = write!(out, ",CHANNELS=\"{ch}\"");
        }
        let _ = writeln!(out, ",URI=\"{}\"", quoted(&r.uri));
    }
    for v in variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
        if let Some(avg) = v.average_bandwidth {
            let _ = write!(out, ",AVERAGE-BANDWIDTH={avg}");
        }
        let _ = write!(out, ",CODECS=\"{}\"", quoted(&v.codecs));
        if let Some((w, h)) = v.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        if let Some(fps) = v.frame_rate {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
        if let Some(g) = &v.audio_group {
            let _ = write!(out, ",AUDIO=\"{}\"", quoted(g));
        }
        let _ = writeln!(out, "\n{}", v.uri);
    }
    out
}

/// One partial segment line.
#[derive(Debug, Clone, PartialEq)]
pub struct PartLine {
    /// Duration in seconds.
    pub duration: f64,
    /// URI.
    pub uri: String,
    /// Starts with a sync sample.
    pub independent: bool,
    /// No media: `GAP=YES`.
    pub gap: bool,
}

/// One segment of a media playlist, with the parts listed before it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentLine {
    /// Duration in seconds.
    pub duration: f64,
    /// URI.
    pub uri: String,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// `EXT-X-MAP` URI, written when it differs from the previous segment's.
    pub map_uri: String,
    /// `EXT-X-PROGRAM-DATE-TIME` of its first sample.
    pub program_date_time: Option<SystemTime>,
    /// Its parts, listed only near the live edge.
    pub parts: Vec<PartLine>,
    /// No media: `EXT-X-GAP`.
    pub gap: bool,
}

/// A rendition report of another rendition's live edge.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionReport {
    /// URI of the other media playlist, relative to this one.
    pub uri: String,
    /// Its last media sequence number (of the segment holding the last part).
    pub last_msn: u64,
    /// Its last part index within that segment.
    pub last_part: Option<u64>,
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION` in whole seconds.
    pub target_duration: u64,
    /// `EXT-X-PART-INF:PART-TARGET` in seconds; `None` writes no LL-HLS tags.
    pub part_target: Option<f64>,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`.
    pub discontinuity_sequence: u64,
    /// Completed segments, oldest first.
    pub segments: Vec<SegmentLine>,
    /// Parts of the segment in progress.
    pub open_parts: Vec<PartLine>,
    /// `EXT-X-DISCONTINUITY` before the parts of the segment in progress.
    pub open_discontinuity: bool,
    /// `EXT-X-MAP` of the segment in progress.
    pub open_map_uri: Option<String>,
    /// `EXT-X-PROGRAM-DATE-TIME` of the segment in progress.
    pub open_program_date_time: Option<SystemTime>,
    /// URI of the next part, for `EXT-X-PRELOAD-HINT`.
    pub preload_hint: Option<String>,
    /// Reports of the other renditions.
    pub rendition_reports: Vec<RenditionReport>,
    /// `EXT-X-ENDLIST`: the lecture is over.
    pub ended: bool,
}

/// Renders a media playlist.
pub fn render_media(p: &MediaPlaylist) -> String {
    let mut out = String::with_capacity(256 + p.segments.len() * 160);
    out.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", p.target_duration);
    if let Some(part) = p.part_target {
        // PART-HOLD-BACK from the value as printed, so it is at least three times it.
        let part = (part * 1000.0).round() / 1000.0;
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
            part * 3.0
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part:.3}");
    }
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", p.media_sequence);
    if p.discontinuity_sequence > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            p.discontinuity_sequence
        );
    }
    let mut current_map: Option<String> = None;
    let mut write_head =
        |out: &mut String, discontinuity: bool, map: &str, pdt: Option<SystemTime>| {
            if discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if current_map.as_deref() != Some(map) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", quoted(map));
                current_map = Some(map.to_string());
            }
            if let Some(t) = pdt {
                let _ = writeln!(
                    out,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    humantime::format_rfc3339_millis(t)
                );
            }
        };
    for s in &p.segments {
        write_head(&mut out, s.discontinuity, &s.map_uri, s.program_date_time);
        write_parts(&mut out, &s.parts);
        if s.gap {
            out.push_str("#EXT-X-GAP\n");
        }
        let _ = writeln!(out, "#EXTINF:{:.5},\n{}", s.duration, s.uri);
    }
    if let Some(map) = &p.open_map_uri
        && (!p.open_parts.is_empty() || p.preload_hint.is_some())
    {
        write_head(
            &mut out,
            p.open_discontinuity,
            map,
            p.open_program_date_time,
        );
    }
    write_parts(&mut out, &p.open_parts);
    if let Some(hint) = &p.preload_hint {
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            quoted(hint)
        );
    }
    for r in &p.rendition_reports {
        let _ = write!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
            quoted(&r.uri),
            r.last_msn
        );
        if let Some(part) = r.last_part {
            let _ = write!(out, ",LAST-PART={part}");
        }
        out.push('\n');
    }
    if p.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

fn write_parts(out: &mut String, parts: &[PartLine]) {
    for part in parts {
        let _ = write!(
            out,
            "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
            part.duration,
            quoted(&part.uri)
        );
        if part.independent {
            out.push_str(",INDEPENDENT=YES");
        }
        if part.gap {
            out.push_str(",GAP=YES");
        }
        out.push('\n');
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "YES" } else { "NO" }
}

/// Makes text safe inside a quoted-string attribute value.
fn quoted(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['"', '\r', '\n']) {
        s.replace(['"', '\r', '\n'], "'").into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn multivariant_parses_with_languages() {
        let audio = ["cmn", "yue", "hak"]
            .iter()
            .zip(["普通话", "粤语", "客家\"话"])
            .enumerate()
            .map(|(i, (l, n))| AudioRendition {
                group_id: "audio".into(),
                name: n.into(),
                language: l.to_string(),
                default: i == 0,
                autoselect: true,
                channels: Some(2),
                uri: format!("audio-{l}/index.m3u8"),
            })
            .collect::<Vec<_>>();
        let text = render_multivariant(
            &audio,
            &[Variant {
                bandwidth: 2_500_000,
                average_bandwidth: None,
                codecs: "avc1.64001f,mp4a.40.2".into(),
                resolution: Some((1280, 720)),
                frame_rate: Some(25.0),
                audio_group: Some("audio".into()),
                uri: "video/index.m3u8".into(),
            }],
        );
        let parsed = m3u8_rs::parse_master_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.alternatives.len(), 3);
        assert_eq!(parsed.alternatives[1].language.as_deref(), Some("yue"));
        assert_eq!(parsed.alternatives[1].name, "粤语");
        assert_eq!(parsed.alternatives[2].name, "客家'话");
        assert!(parsed.alternatives[0].default);
        assert_eq!(parsed.variants[0].audio.as_deref(), Some("audio"));
    }

    #[test]
    fn media_playlist_with_parts() {
        let t0 = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let part = |m: u64, i: u64| PartLine {
            duration: 0.4,
            uri: format!("p{m}.{i}.m4s"),
            independent: i == 0,
            gap: false,
        };
        let p = MediaPlaylist {
            target_duration: 2,
            part_target: Some(0.4),
            media_sequence: 10,
            discontinuity_sequence: 1,
            segments: vec![SegmentLine {
                duration: 2.0,
                uri: "s10.m4s".into(),
                discontinuity: false,
                map_uri: "init0.mp4".into(),
                program_date_time: Some(t0),
                parts: (0..5).map(|i| part(10, i)).collect(),
                gap: false,
            }],
            open_parts: vec![part(11, 0)],
            open_discontinuity: true,
            open_map_uri: Some("init1.mp4".into()),
            open_program_date_time: Some(t0 + Duration::from_secs(5)),
            preload_hint: Some("p11.1.m4s".into()),
            rendition_reports: vec![RenditionReport {
                uri: "../audio-yue/index.m3u8".into(),
                last_msn: 11,
                last_part: Some(0),
            }],
            ended: false,
        };
        let text = render_media(&p);
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.123Z\n"));
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init1.mp4\"\n"));
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p11.1.m4s\"\n"));
        assert!(text.contains("PART-HOLD-BACK=1.200"));
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.media_sequence, 10);
        assert_eq!(parsed.segments.len(), 1);
        assert_eq!(parsed.segments[0].uri, "s10.m4s");
        assert_eq!(parsed.discontinuity_sequence, 1);
    }

    #[test]
    fn part_hold_back_is_three_printed_part_targets() {
        for part in [0.3306, 0.3304, 0.427, 0.4, 1.0005, 0.33333] {
            let text = render_media(&MediaPlaylist {
                target_duration: 2,
                part_target: Some(part),
                media_sequence: 0,
                discontinuity_sequence: 0,
                segments: Vec::new(),
                open_parts: Vec::new(),
                open_discontinuity: false,
                open_map_uri: None,
                open_program_date_time: None,
                preload_hint: None,
                rendition_reports: Vec::new(),
                ended: false,
            });
            let value = |key: &str| -> f64 {
                let at = text.find(key).unwrap() + key.len();
                text[at..]
                    .split(|c: char| c != '.' && !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            let target = value("PART-TARGET=");
            let hold = value("PART-HOLD-BACK=");
            assert!(hold >= 3.0 * target - 1e-9, "{part}: {hold} < 3 x {target}");
        }
    }
}
