//! RTMP → media model: FLV tag bodies become [`MediaEvent`]s.
//!
//! Track 0 is the video track, track 1 the audio track. RTMP timestamps are 32-bit
//! milliseconds that wrap after 49.7 days; they are extended to 64 bits here, so everything
//! downstream sees monotonic-ish 64-bit time.

use bytes::Bytes;
use media::aac::AacParams;
use media::flv::{self, AudioTag, FlvError, VideoTag};
use media::h264::H264Params;
use media::{CodecParams, Frame, Language, MediaEvent, TrackId, TrackInfo, model::rescale};

/// Track id of the video track.
pub const VIDEO: TrackId = TrackId(0);
/// Track id of the audio track.
pub const AUDIO: TrackId = TrackId(1);

/// Errors mapping a tag; the connection is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToMediaError {
    /// The tag itself is malformed or carries an unsupported codec.
    #[error(transparent)]
    Flv(#[from] FlvError),
    /// A bad codec configuration.
    #[error("{0}")]
    Config(String),
}

/// Extends wrapping 32-bit millisecond timestamps to 64 bits.
#[derive(Debug, Default, Clone)]
pub struct TimestampExtender {
    /// Furthest 64-bit value seen so far.
    last: Option<i64>,
}

impl TimestampExtender {
    /// The 64-bit value of `ts`: the one nearest the furthest value seen so far, so a wrap
    /// moves forward and a late frame from before a wrap stays before it.
    pub fn extend(&mut self, ts: u32) -> i64 {
        const RANGE: i64 = 1 << 32;
        let Some(last) = self.last else {
            self.last = Some(ts as i64);
            return ts as i64;
        };
        let mut v = (last & !(RANGE - 1)) + ts as i64;
        if v - last > RANGE / 2 {
            v -= RANGE;
        } else if last - v > RANGE / 2 {
            v += RANGE;
        }
        if v > last {
            self.last = Some(v);
        }
        v
    }
}

/// Maps one RTMP publishing session.
pub struct FlvToMedia {
    language: Option<Language>,
    video: Option<H264Params>,
    audio: Option<AacParams>,
    video_ts: TimestampExtender,
    audio_ts: TimestampExtender,
}

impl FlvToMedia {
    /// A mapper whose audio track gets `language` (from `?lang=`), if given.
    pub fn new(language: Option<Language>) -> Self {
        FlvToMedia {
            language,
            video: None,
            audio: None,
            video_ts: TimestampExtender::default(),
            audio_ts: TimestampExtender::default(),
        }
    }

    /// Maps a video tag body received with RTMP timestamp `ts`.
    pub fn video(&mut self, ts: u32, body: Bytes) -> Result<Option<MediaEvent>, ToMediaError> {
        match flv::parse_video(body)? {
            VideoTag::AvcConfig(record) => {
                if self.video.as_ref().is_some_and(|v| v.record == record) {
                    return Ok(None);
                }
                let params = H264Params::from_record(record)
                    .map_err(|e| ToMediaError::Config(e.to_string()))?;
                self.video = Some(params.clone());
                Ok(Some(MediaEvent::Track {
                    id: VIDEO,
                    info: TrackInfo::new(CodecParams::H264(params)),
                }))
            }
            VideoTag::AvcFrame {
                keyframe,
                composition_ms,
                data,
            } => {
                if self.video.is_none() || data.is_empty() {
                    return Ok(None);
                }
                let dts_ms = self.video_ts.extend(ts);
                let dts = dts_ms * 90;
                let pts = (dts_ms + composition_ms as i64) * 90;
                Ok(Some(MediaEvent::Frame {
                    track: VIDEO,
                    frame: Frame {
                        dts,
                        pts,
                        keyframe,
                        data,
                    },
                }))
            }
            VideoTag::Ignored => Ok(None),
        }
    }

    /// Maps an audio tag body received with RTMP timestamp `ts`.
    pub fn audio(&mut self, ts: u32, body: Bytes) -> Result<Option<MediaEvent>, ToMediaError> {
        match flv::parse_audio(body)? {
            AudioTag::AacConfig(config) => {
                if self.audio.as_ref().is_some_and(|a| a.config == config) {
                    return Ok(None);
                }
                let params = AacParams::from_config(config)
                    .map_err(|e| ToMediaError::Config(e.to_string()))?;
                self.audio = Some(params.clone());
                let mut info = TrackInfo::new(CodecParams::Aac(params));
                info.language = self.language.clone();
                Ok(Some(MediaEvent::Track { id: AUDIO, info }))
            }
            AudioTag::AacFrame(data) => {
                let Some(params) = &self.audio else {
                    return Ok(None);
                };
                if data.is_empty() {
                    return Ok(None);
                }
                let ms = self.audio_ts.extend(ts);
                let t = rescale(ms, 1000, params.sample_rate);
                Ok(Some(MediaEvent::Frame {
                    track: AUDIO,
                    frame: Frame {
                        dts: t,
                        pts: t,
                        keyframe: true,
                        data,
                    },
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extends_across_wrap() {
        let mut e = TimestampExtender::default();
        assert_eq!(e.extend(0xffff_fff0), 0xffff_fff0);
        assert_eq!(e.extend(0x0000_0010), (1 << 32) + 0x10);
        // a late frame from just before the wrap
        assert_eq!(e.extend(0xffff_fffa), 0xffff_fffa);
        assert_eq!(e.extend(0x0000_0020), (1 << 32) + 0x20);
        // a small step back is kept as such
        assert_eq!(e.extend(0x0000_0018), (1 << 32) + 0x18);
    }

    #[test]
    fn maps_avc_and_aac() {
        let mut m = FlvToMedia::new(Some(Language::parse("yue").unwrap()));
        // frames before configuration are dropped
        assert_eq!(
            m.audio(0, Bytes::from_static(&[0xaf, 1, 0x21])).unwrap(),
            None
        );
        let ev = m
            .audio(0, Bytes::from_static(&[0xaf, 0, 0x11, 0x90]))
            .unwrap()
            .unwrap();
        let MediaEvent::Track { id, info } = ev else {
            panic!()
        };
        assert_eq!(id, AUDIO);
        assert_eq!(info.language.unwrap().as_str(), "yue");
        assert_eq!(info.timescale, 48_000);
        // same config again: nothing new
        assert_eq!(
            m.audio(5, Bytes::from_static(&[0xaf, 0, 0x11, 0x90]))
                .unwrap(),
            None
        );
        let ev = m
            .audio(1000, Bytes::from_static(&[0xaf, 1, 0x21]))
            .unwrap()
            .unwrap();
        assert!(matches!(
            ev,
            MediaEvent::Frame {
                frame: Frame { dts: 48_000, .. },
                ..
            }
        ));

        let p = H264Params::from_sps_pps(
            &[
                0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
                0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
            ],
            &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0],
        )
        .unwrap();
        let mut tag = vec![0x17, 0, 0, 0, 0];
        tag.extend_from_slice(&p.record);
        let ev = m.video(0, Bytes::from(tag)).unwrap().unwrap();
        assert!(matches!(ev, MediaEvent::Track { id: VIDEO, .. }));
        let ev = m
            .video(
                40,
                Bytes::from_static(&[0x27, 1, 0, 0, 80, 0, 0, 0, 1, 0x41]),
            )
            .unwrap()
            .unwrap();
        let MediaEvent::Frame { frame, .. } = ev else {
            panic!()
        };
        assert_eq!(
            (frame.dts, frame.pts, frame.keyframe),
            (3600, 10_800, false)
        );
    }

    #[test]
    fn bad_config_is_an_error() {
        let mut m = FlvToMedia::new(None);
        assert!(
            m.video(0, Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2]))
                .is_err()
        );
        assert!(m.audio(0, Bytes::from_static(&[0xaf, 0, 0x00])).is_err());
        assert!(m.video(0, Bytes::from_static(&[0x22, 1])).is_err());
    }
}
