//! FLV audio and video tag bodies, as RTMP carries them in audio (8) and video (9) messages.
//!
//! Legacy tags (AVC, AAC) and Enhanced RTMP v1/v2 video tags (`ExVideoTagHeader` with a FourCC)
//! are recognised; codecs other than H.264 and AAC are reported as unsupported so the input can
//! say so clearly instead of guessing.

use bytes::Bytes;

/// Errors in a tag body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The body ends before its header does.
    #[error("truncated FLV {0} tag")]
    Truncated(&'static str),
    /// A codec this relay does not carry.
    #[error("unsupported {kind} codec {codec}")]
    Unsupported {
        /// `audio` or `video`.
        kind: &'static str,
        /// Codec name or id.
        codec: String,
    },
    /// A packet type outside the specification.
    #[error("unknown {0} packet type {1}")]
    UnknownPacketType(&'static str, u8),
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// `AVCDecoderConfigurationRecord` (AVC sequence header).
    AvcConfig(Bytes),
    /// One access unit of length-prefixed NAL units.
    AvcFrame {
        /// Frame type 1 (keyframe) in the tag header.
        keyframe: bool,
        /// Composition time offset in milliseconds (pts - dts).
        composition_ms: i32,
        /// The NAL units.
        data: Bytes,
    },
    /// End of sequence, or a command/info frame: nothing to forward.
    Ignored,
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AAC `AudioSpecificConfig` (AAC sequence header).
    AacConfig(Bytes),
    /// One raw AAC frame.
    AacFrame(Bytes),
}

const AVC: u8 = 7;
const AAC: u8 = 10;

/// Parses a video tag body.
pub fn parse_video(body: Bytes) -> Result<VideoTag, FlvError> {
    let Some(&first) = body.first() else {
        return Err(FlvError::Truncated("video"));
    };
    let frame_type = (first >> 4) & 0x07;
    if first & 0x80 != 0 {
        return parse_enhanced_video(body, frame_type);
    }
    // Frame type 5 is a video info/command frame carrying no picture.
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    let codec = first & 0x0f;
    if codec != AVC {
        return Err(FlvError::Unsupported {
            kind: "video",
            codec: legacy_video_codec_name(codec),
        });
    }
    if body.len() < 5 {
        return Err(FlvError::Truncated("video"));
    }
    let packet_type = body[1];
    let composition_ms = si24(&body[2..5]);
    let payload = body.slice(5..);
    match packet_type {
        0 => Ok(VideoTag::AvcConfig(payload)),
        1 => Ok(VideoTag::AvcFrame {
            keyframe: frame_type == 1,
            composition_ms,
            data: payload,
        }),
        2 => Ok(VideoTag::Ignored),
        t => Err(FlvError::UnknownPacketType("AVC", t)),
    }
}

fn parse_enhanced_video(body: Bytes, frame_type: u8) -> Result<VideoTag, FlvError> {
    let packet_type = body[0] & 0x0f;
    if body.len() < 5 {
        return Err(FlvError::Truncated("enhanced video"));
    }
    let fourcc = &body[1..5];
    // ModEx (7) and Multitrack (6) wrap other packets; we carry one single-track video stream.
    if packet_type == 6 || packet_type == 7 {
        return Err(FlvError::Unsupported {
            kind: "video",
            codec: format!("enhanced RTMP packet type {packet_type} (multitrack/ModEx)"),
        });
    }
    if fourcc != b"avc1" {
        return Err(FlvError::Unsupported {
            kind: "video",
            codec: String::from_utf8_lossy(fourcc).into_owned(),
        });
    }
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    match packet_type {
        0 => Ok(VideoTag::AvcConfig(body.slice(5..))),
        1 => {
            if body.len() < 8 {
                return Err(FlvError::Truncated("enhanced video"));
            }
            Ok(VideoTag::AvcFrame {
                keyframe: frame_type == 1,
                composition_ms: si24(&body[5..8]),
                data: body.slice(8..),
            })
        }
        3 => Ok(VideoTag::AvcFrame {
            keyframe: frame_type == 1,
            composition_ms: 0,
            data: body.slice(5..),
        }),
        2 | 4 => Ok(VideoTag::Ignored),
        t => Err(FlvError::UnknownPacketType("enhanced video", t)),
    }
}

/// Parses an audio tag body.
pub fn parse_audio(body: Bytes) -> Result<AudioTag, FlvError> {
    let Some(&first) = body.first() else {
        return Err(FlvError::Truncated("audio"));
    };
    let format = first >> 4;
    if format != AAC {
        return Err(FlvError::Unsupported {
            kind: "audio",
            codec: legacy_audio_codec_name(format),
        });
    }
    if body.len() < 2 {
        return Err(FlvError::Truncated("audio"));
    }
    match body[1] {
        0 => Ok(AudioTag::AacConfig(body.slice(2..))),
        1 => Ok(AudioTag::AacFrame(body.slice(2..))),
        t => Err(FlvError::UnknownPacketType("AAC", t)),
    }
}

fn si24(b: &[u8]) -> i32 {
    let v = ((b[0] as i32) << 16) | ((b[1] as i32) << 8) | b[2] as i32;
    (v << 8) >> 8
}

fn legacy_video_codec_name(id: u8) -> String {
    match id {
        2 => "Sorenson H.263".into(),
        3 => "Screen video".into(),
        4 => "On2 VP6".into(),
        5 => "On2 VP6 alpha".into(),
        6 => "Screen video v2".into(),
        12 => "HEVC (codec id 12)".into(),
        other => format!("id {other}"),
    }
}

fn legacy_audio_codec_name(id: u8) -> String {
    match id {
        0 | 3 => "PCM".into(),
        1 => "ADPCM".into(),
        2 => "MP3".into(),
        4..=6 => "Nellymoser".into(),
        7 => "G.711 A-law".into(),
        8 => "G.711 mu-law".into(),
        9 => "enhanced audio (ExHeader)".into(),
        11 => "Speex".into(),
        14 => "MP3 8 kHz".into(),
        other => format!("id {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc() {
        let config = parse_video(Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2, 3])).unwrap();
        assert_eq!(config, VideoTag::AvcConfig(Bytes::from_static(&[1, 2, 3])));
        let frame = parse_video(Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xd8, 9])).unwrap();
        assert_eq!(
            frame,
            VideoTag::AvcFrame {
                keyframe: false,
                composition_ms: -40,
                data: Bytes::from_static(&[9])
            }
        );
        let key = parse_video(Bytes::from_static(&[0x17, 1, 0, 0, 40, 9])).unwrap();
        assert!(matches!(
            key,
            VideoTag::AvcFrame {
                keyframe: true,
                composition_ms: 40,
                ..
            }
        ));
    }

    #[test]
    fn enhanced_avc_and_hevc() {
        let mut b = vec![0x80 | 0x10, b'a', b'v', b'c', b'1'];
        b.extend_from_slice(&[1, 2]);
        assert_eq!(
            parse_video(Bytes::from(b)).unwrap(),
            VideoTag::AvcConfig(Bytes::from_static(&[1, 2]))
        );
        let b = [0x80 | 0x10 | 3, b'a', b'v', b'c', b'1', 7];
        assert!(matches!(
            parse_video(Bytes::copy_from_slice(&b)).unwrap(),
            VideoTag::AvcFrame {
                keyframe: true,
                composition_ms: 0,
                ..
            }
        ));
        let b = [0x80 | 0x10 | 1, b'h', b'v', b'c', b'1', 0, 0, 0, 1];
        assert!(matches!(
            parse_video(Bytes::copy_from_slice(&b)),
            Err(FlvError::Unsupported { .. })
        ));
    }

    #[test]
    fn aac() {
        assert_eq!(
            parse_audio(Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap(),
            AudioTag::AacConfig(Bytes::from_static(&[0x12, 0x10]))
        );
        assert_eq!(
            parse_audio(Bytes::from_static(&[0xaf, 1, 0x21])).unwrap(),
            AudioTag::AacFrame(Bytes::from_static(&[0x21]))
        );
        assert!(matches!(
            parse_audio(Bytes::from_static(&[0x2f, 1])),
            Err(FlvError::Unsupported { .. })
        ));
    }

    #[test]
    fn truncated_tags_error_not_panic() {
        for len in 0..8 {
            let v = vec![0x17u8; len];
            let _ = parse_video(Bytes::from(v.clone()));
            let mut e = v.clone();
            if let Some(b) = e.first_mut() {
                *b = 0x90;
            }
            let _ = parse_video(Bytes::from(e));
            let mut a = v;
            if let Some(b) = a.first_mut() {
                *b = 0xaf;
            }
            let _ = parse_audio(Bytes::from(a));
        }
        assert!(parse_video(Bytes::new()).is_err());
        assert!(parse_audio(Bytes::from_static(&[0xaf])).is_err());
    }
}
