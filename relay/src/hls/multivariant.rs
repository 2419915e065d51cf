//! The multivariant playlist: the source's video variant, then the smaller pictures of the
//! ladder (if any), then sound alone, each referencing one audio group with an
//! `EXT-X-MEDIA` rendition per dialect (`LANGUAGE`, `NAME`, `DEFAULT`, `AUTOSELECT`).

use media::m3u8::{self, AudioRendition, Variant};
use media::{CodecParams, TrackKind};

use super::packager::Packager;

/// Group id of the dialect renditions.
pub const AUDIO_GROUP: &str = "dialects";

/// Bitrates assumed before a segment has been measured.
const GUESS_VIDEO_BPS: u64 = 2_500_000;
const GUESS_AUDIO_BPS: u64 = 160_000;
const GUESS_RUNG_BPS: u64 = 500_000;

/// Renders the multivariant playlist, or `None` while the lecture has no rendition with
/// media yet. `default_language` picks the `DEFAULT=YES` dialect; `rank` orders the
/// dialects (the configured order: 普通话, 粤语, 客家话).
pub fn render(
    p: &Packager,
    default_language: &str,
    rank: impl Fn(&str) -> usize,
) -> Option<String> {
    let renditions = p.renditions();
    let video = renditions
        .iter()
        .position(|r| r.kind() == TrackKind::Video && !r.derived);
    // Smaller pictures with something to play, largest first.
    let mut rungs: Vec<usize> = (0..renditions.len())
        .filter(|&i| renditions[i].kind() == TrackKind::Video && renditions[i].derived)
        // Made in this publishing session: a rung that never started again is not offered.
        .filter(|&i| renditions[i].in_session && p.has_media(i))
        .collect();
    rungs.sort_by_key(|&i| match &renditions[i].info.codec {
        CodecParams::H264(h) => std::cmp::Reverse(h.width as u64 * h.height as u64),
        _ => std::cmp::Reverse(0),
    });
    let mut audio: Vec<usize> = (0..renditions.len())
        .filter(|&i| renditions[i].kind() == TrackKind::Audio)
        .collect();
    // Stable: dialects the configuration does not name keep their arrival order.
    audio.sort_by_key(|&i| {
        renditions[i]
            .language
            .as_ref()
            .map_or(usize::MAX, |l| rank(l.as_str()))
    });
    if !(0..renditions.len()).any(|i| p.has_media(i)) {
        return None;
    }
    let default = audio
        .iter()
        .position(|&i| {
            renditions[i]
                .language
                .as_ref()
                .is_some_and(|l| l.as_str() == default_language)
        })
        .unwrap_or(0);
    let groups: Vec<AudioRendition> = audio
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let r = &renditions[i];
            let channels = match &r.info.codec {
                CodecParams::Aac(a) => Some(a.channel_count()),
                _ => None,
            };
            AudioRendition {
                group_id: AUDIO_GROUP.into(),
                name: r.name.clone(),
                language: r.language.as_ref().map_or("und".into(), |l| l.to_string()),
                default: n == default,
                autoselect: true,
                channels,
                uri: format!("{}/index.m3u8", r.id),
            }
        })
        .collect();
    let audio_peak = audio
        .iter()
        .map(|&i| renditions[i].peak_bitrate().unwrap_or(GUESS_AUDIO_BPS))
        .max()
        .unwrap_or(0);
    let audio_avg = audio
        .iter()
        .filter_map(|&i| renditions[i].rates().map(|r| r.0))
        .max();
    let audio_codecs: Vec<String> = {
        let mut c: Vec<String> = Vec::new();
        for &i in &audio {
            let s = renditions[i].info.codec.codec_string();
            if !c.contains(&s) {
                c.push(s);
            }
        }
        c
    };
    let video_variant = |v: usize, guess_bps: u64| {
        let r = &renditions[v];
        let own = r.info.codec.codec_string();
        let mut codecs = vec![own.clone()];
        codecs.extend(audio_codecs.iter().filter(|c| **c != own).cloned());
        let (resolution, sps_fps) = match &r.info.codec {
            CodecParams::H264(h) => (
                Some((h.width, h.height)),
                h.fps_milli.map(|f| f as f64 / 1000.0),
            ),
            _ => (None, None),
        };
        let rates = r.rates();
        Variant {
            bandwidth: r.peak_bitrate().unwrap_or(guess_bps) + audio_peak,
            average_bandwidth: rates.map(|(bps, _)| bps + audio_avg.unwrap_or(0)),
            codecs: codecs.join(","),
            resolution,
            frame_rate: rates
                .map(|(_, fps)| fps)
                .or(sps_fps)
                .map(|f| (f * 1000.0).round() / 1000.0),
            audio_group: (!audio.is_empty()).then(|| AUDIO_GROUP.to_string()),
            uri: format!("{}/index.m3u8", r.id),
        }
    };
    let variant = match video {
        Some(v) => video_variant(v, GUESS_VIDEO_BPS),
        None => {
            // Audio-only lecture: the variant plays the default dialect; the group offers
            // the others.
            let &main = audio.get(default)?;
            Variant {
                bandwidth: audio_peak,
                average_bandwidth: audio_avg,
                codecs: audio_codecs.join(","),
                resolution: None,
                frame_rate: None,
                audio_group: Some(AUDIO_GROUP.to_string()),
                uri: format!("{}/index.m3u8", renditions[main].id),
            }
        }
    };
    let mut variants = vec![variant];
    if video.is_some() {
        variants.extend(rungs.iter().map(|&i| video_variant(i, GUESS_RUNG_BPS)));
    }
    if video.is_some()
        && let Some(&main) = audio.get(default)
    {
        // Audio only, for classrooms on a poor link: the same dialect group, no video. Native
        // players (Safari, iOS) can step down to it; the web player offers it as a mode.
        variants.push(Variant {
            bandwidth: audio_peak,
            average_bandwidth: audio_avg,
            codecs: audio_codecs.join(","),
            resolution: None,
            frame_rate: None,
            audio_group: Some(AUDIO_GROUP.to_string()),
            uri: format!("{}/index.m3u8", renditions[main].id),
        });
    }
    Some(m3u8::render_multivariant(&groups, &variants))
}
