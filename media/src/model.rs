//! The media model every input maps to and every output maps from.
//!
//! A lecture has tracks: at most one video track and any number of audio tracks, each audio
//! track carrying one dialect (a BCP-47 language tag such as `cmn`, `yue`, `hak`). Each track
//! carries [`Frame`]s: one access unit (video) or one coded audio frame, with 64-bit timestamps
//! in the track's own timescale ([`TrackInfo::timescale`]).

use std::fmt;

use bytes::Bytes;

use crate::aac::AacParams;
use crate::h264::H264Params;

/// Index of a track within one publishing session, assigned by the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u32);

/// Whether a track is picture or sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Pictures.
    Video,
    /// Sound: one dialect per track.
    Audio,
}

/// Codec and its decoder configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecParams {
    /// H.264 / AVC; frames are length-prefixed NAL units (AVCC layout).
    H264(H264Params),
    /// AAC; frames are raw access units (no ADTS header).
    Aac(AacParams),
}

impl CodecParams {
    /// The kind of track this codec belongs to.
    pub fn kind(&self) -> TrackKind {
        match self {
            CodecParams::H264(_) => TrackKind::Video,
            CodecParams::Aac(_) => TrackKind::Audio,
        }
    }

    /// The RFC 6381 codec string used in HLS `CODECS` attributes, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        match self {
            CodecParams::H264(p) => p.codec_string(),
            CodecParams::Aac(p) => p.codec_string(),
        }
    }

    /// A short human name: `H.264`, `AAC`.
    pub fn name(&self) -> &'static str {
        match self {
            CodecParams::H264(_) => "H.264",
            CodecParams::Aac(_) => "AAC",
        }
    }

    /// The timescale frames of this codec use: 90 kHz for video, the sample rate for audio.
    pub fn natural_timescale(&self) -> u32 {
        match self {
            CodecParams::H264(_) => 90_000,
            CodecParams::Aac(p) => p.sample_rate,
        }
    }
}

/// Description of one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// Codec and decoder configuration.
    pub codec: CodecParams,
    /// Units per second of [`Frame::dts`] and [`Frame::pts`].
    pub timescale: u32,
    /// Dialect of an audio track, when the input knows it (`?lang=`, an ISO-639 descriptor).
    /// `None` lets the relay apply the lecture's default dialect.
    pub language: Option<Language>,
}

impl TrackInfo {
    /// A track in the codec's natural timescale with no language set.
    pub fn new(codec: CodecParams) -> Self {
        let timescale = codec.natural_timescale();
        TrackInfo {
            codec,
            timescale,
            language: None,
        }
    }

    /// The kind of track.
    pub fn kind(&self) -> TrackKind {
        self.codec.kind()
    }
}

/// One access unit (video) or coded audio frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Decode timestamp in the track's timescale.
    pub dts: i64,
    /// Presentation timestamp in the track's timescale (`>= dts` for well-formed input).
    pub pts: i64,
    /// True for a frame a decoder can start at (an IDR access unit; every audio frame).
    pub keyframe: bool,
    /// Coded payload, shared between every output without copying.
    pub data: Bytes,
}

/// Something a publishing session sends into the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A track appeared, or its codec configuration changed (new SPS/PPS, new AAC config).
    Track {
        /// The input's id for the track.
        id: TrackId,
        /// Its description.
        info: TrackInfo,
    },
    /// A frame for a track announced earlier.
    Frame {
        /// The track.
        track: TrackId,
        /// The frame.
        frame: Frame,
    },
}

/// A BCP-47 language tag naming a dialect, normalised to lower case: `cmn`, `yue`, `hak`,
/// `zh-yue`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Language(String);

/// Error for a string that is not a usable language tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid language tag {0:?}: expected BCP-47 such as cmn, yue, hak or zh-yue")]
pub struct LanguageError(pub String);

impl Language {
    /// Parses a tag: 1–8 subtags of 1–8 ASCII letters or digits separated by `-`, the first
    /// of 2–3 letters (ISO 639-1/2/3) and the whole at most 35 characters.
    pub fn parse(tag: &str) -> Result<Self, LanguageError> {
        let err = || LanguageError(tag.chars().take(40).collect());
        if tag.is_empty() || tag.len() > 35 {
            return Err(err());
        }
        for (i, sub) in tag.split('-').enumerate() {
            let ok_len = if i == 0 {
                (2..=3).contains(&sub.len()) && sub.bytes().all(|b| b.is_ascii_alphabetic())
            } else {
                (1..=8).contains(&sub.len()) && sub.bytes().all(|b| b.is_ascii_alphanumeric())
            };
            if !ok_len || i >= 8 {
                return Err(err());
            }
        }
        Ok(Language(tag.to_ascii_lowercase()))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A three-letter code for the fMP4 `mdhd` box when the primary subtag is one, else
    /// `und`.
    pub fn iso639_3(&self) -> &str {
        let primary = self.0.split('-').next().unwrap_or("");
        if primary.len() == 3 { primary } else { "und" }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Language {
    type Err = LanguageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Language::parse(s)
    }
}

/// Rescales `value` from timescale `from` to timescale `to`, rounding to nearest.
pub fn rescale(value: i64, from: u32, to: u32) -> i64 {
    if from == to {
        return value;
    }
    let v = value as i128 * to as i128;
    let from = from as i128;
    let half = from / 2;
    let r = if v >= 0 {
        (v + half) / from
    } else {
        (v - half) / from
    };
    r as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags() {
        assert_eq!(Language::parse("cmn").unwrap().as_str(), "cmn");
        assert_eq!(Language::parse("zh-YUE").unwrap().as_str(), "zh-yue");
        assert_eq!(Language::parse("zh-Hant-HK").unwrap().iso639_3(), "und");
        assert_eq!(Language::parse("hak").unwrap().iso639_3(), "hak");
        for bad in [
            "",
            "c",
            "cmnx",
            "1ab",
            "cmn-",
            "cmn--x",
            "cmn-toolongsub",
            "a\"b",
            "yue<",
        ] {
            assert!(Language::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rescale_rounds() {
        assert_eq!(rescale(1000, 1000, 90_000), 90_000);
        assert_eq!(rescale(1, 48_000, 90_000), 2);
        assert_eq!(rescale(-1, 48_000, 90_000), -2);
        assert_eq!(rescale(1024, 44_100, 1000), 23);
        assert_eq!(rescale(i64::MAX / 2, 90_000, 90_000), i64::MAX / 2);
    }
}
