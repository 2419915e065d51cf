//! RTSP (RTP from a camera, depacketized by retina) → media model.
//!
//! - Video: H.264 frames as length-prefixed NAL units, configuration from the
//!   AVCDecoderConfigurationRecord retina builds from the SDP and in-band parameter sets.
//!   RTP carries presentation times only; decode times are synthesised (see [`DtsSynth`]).
//!   After lost packets, frames are dropped until the next keyframe.
//! - Audio: AAC access units with their AudioSpecificConfig, passed through; G.711 is
//!   handed to a transcoder by the driver (the events for it come from there).
//!
//! Pure mapping: no IO, retina's types stay in the driver.

use bytes::Bytes;
use media::aac::AacParams;
use media::h264::H264Params;
use media::model::rescale;
use media::{CodecParams, Frame, Language, MediaEvent, TrackId, TrackInfo};

/// Track id of the camera's video.
pub const VIDEO: TrackId = TrackId(0);
/// Track id of its audio.
pub const AUDIO: TrackId = TrackId(1);

/// Decode times for a stream that carries presentation times only (RTP): with B-frames a
/// frame can be presented before the one decoded just before it. The delay between decode
/// and presentation is learnt from how far presentation times go back, and every DTS is
/// kept increasing.
#[derive(Debug, Default, Clone)]
pub struct DtsSynth {
    delay: i64,
    max_pts: Option<i64>,
    last_dts: Option<i64>,
}

impl DtsSynth {
    /// The decode time for a frame presented at `pts`.
    pub fn next(&mut self, pts: i64) -> i64 {
        if let Some(max) = self.max_pts {
            // A frame shown before one already seen: frames are reordered by this much.
            self.delay = self.delay.max(max - pts).min(90_000);
        }
        self.max_pts = Some(self.max_pts.map_or(pts, |m| m.max(pts)));
        let mut dts = pts - self.delay;
        if let Some(last) = self.last_dts
            && dts <= last
        {
            dts = last + 1;
        }
        self.last_dts = Some(dts);
        dts.min(pts)
    }
}

/// Why a camera's stream cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtspMediaError {
    /// A configuration that does not parse.
    #[error("camera sent a bad {0} configuration: {1}")]
    BadConfig(&'static str, String),
}

/// Maps one camera session.
pub struct RtspToMedia {
    language: Option<Language>,
    video: Option<H264Params>,
    audio: Option<AacParams>,
    dts: DtsSynth,
    waiting_keyframe: bool,
}

impl RtspToMedia {
    /// A mapper whose audio gets `language`.
    pub fn new(language: Option<Language>) -> Self {
        RtspToMedia {
            language,
            video: None,
            audio: None,
            dts: DtsSynth::default(),
            waiting_keyframe: true,
        }
    }

    /// The video configuration (an AVCDecoderConfigurationRecord), when new or changed.
    pub fn video_config(&mut self, record: &[u8]) -> Result<Option<MediaEvent>, RtspMediaError> {
        if self.video.as_ref().is_some_and(|v| v.record == record) {
            return Ok(None);
        }
        let p = H264Params::from_record(Bytes::copy_from_slice(record))
            .map_err(|e| RtspMediaError::BadConfig("H.264", e.to_string()))?;
        self.video = Some(p.clone());
        Ok(Some(MediaEvent::Track {
            id: VIDEO,
            info: TrackInfo::new(CodecParams::H264(p)),
        }))
    }

    /// A video frame presented at `pts` (units of `clock_rate`), after `lost` lost packets.
    pub fn video(
        &mut self,
        pts: i64,
        clock_rate: u32,
        keyframe: bool,
        lost: u16,
        data: Bytes,
    ) -> Option<MediaEvent> {
        self.video.as_ref()?;
        if lost > 0 && !keyframe {
            self.waiting_keyframe = true;
        }
        if self.waiting_keyframe {
            if !keyframe {
                return None;
            }
            self.waiting_keyframe = false;
        }
        let pts = rescale(pts, clock_rate, 90_000);
        let dts = self.dts.next(pts);
        Some(MediaEvent::Frame {
            track: VIDEO,
            frame: Frame {
                dts,
                pts,
                keyframe,
                data,
            },
        })
    }

    /// The AAC configuration (an AudioSpecificConfig), when new or changed.
    pub fn aac_config(&mut self, config: &[u8]) -> Result<Option<MediaEvent>, RtspMediaError> {
        if self.audio.as_ref().is_some_and(|a| a.config == config) {
            return Ok(None);
        }
        let p = AacParams::from_config(Bytes::copy_from_slice(config))
            .map_err(|e| RtspMediaError::BadConfig("AAC", e.to_string()))?;
        Ok(Some(self.audio_track(p)))
    }

    /// Announces the audio track as `params` (also for transcoded audio).
    pub fn audio_track(&mut self, params: AacParams) -> MediaEvent {
        self.audio = Some(params.clone());
        let mut info = TrackInfo::new(CodecParams::Aac(params));
        info.language = self.language.clone();
        MediaEvent::Track { id: AUDIO, info }
    }

    /// An AAC frame at `pts` in units of `clock_rate`.
    pub fn aac(&mut self, pts: i64, clock_rate: u32, data: Bytes) -> Option<MediaEvent> {
        let rate = self.audio.as_ref()?.sample_rate;
        let t = rescale(pts, clock_rate, rate);
        Some(MediaEvent::Frame {
            track: AUDIO,
            frame: Frame {
                dts: t,
                pts: t,
                keyframe: true,
                data,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dts_for_b_frames_stays_below_pts_and_increasing() {
        // I P B B P B B at 25 fps (3600 ticks): presentation order 0, 3, 1, 2, 6, 4, 5.
        let pts: Vec<i64> = [0, 3, 1, 2, 6, 4, 5].iter().map(|i| i * 3600).collect();
        let mut d = DtsSynth::default();
        let dts: Vec<i64> = pts.iter().map(|&p| d.next(p)).collect();
        assert!(dts.windows(2).all(|w| w[1] > w[0]), "{dts:?}");
        assert!(dts.iter().zip(&pts).all(|(d, p)| d <= p), "{dts:?}");
        // Without B-frames DTS is PTS.
        let mut d = DtsSynth::default();
        assert_eq!(d.next(0), 0);
        assert_eq!(d.next(3600), 3600);
    }

    #[test]
    fn video_waits_for_a_keyframe_after_loss() {
        let mut m = RtspToMedia::new(None);
        // x264's 1280x720 High profile parameter sets.
        let sps = [
            0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00,
            0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x83, 0x19, 0x60,
        ];
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let record = H264Params::from_sps_pps(&sps, &pps).unwrap().record;
        assert!(m.video_config(&record).unwrap().is_some());
        assert!(
            m.video_config(&record).unwrap().is_none(),
            "same config once"
        );
        let f = |m: &mut RtspToMedia, t: i64, key: bool, lost: u16| {
            m.video(
                t,
                90_000,
                key,
                lost,
                Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            )
            .is_some()
        };
        assert!(!f(&mut m, 0, false, 0), "nothing before a keyframe");
        assert!(f(&mut m, 3600, true, 0));
        assert!(f(&mut m, 7200, false, 0));
        assert!(!f(&mut m, 10800, false, 2), "loss");
        assert!(!f(&mut m, 14400, false, 0));
        assert!(f(&mut m, 18000, true, 0));
    }

    #[test]
    fn aac_keeps_its_language_and_rate() {
        let mut m = RtspToMedia::new(Some(Language::parse("yue").unwrap()));
        let Some(MediaEvent::Track { info, .. }) = m.aac_config(&[0x11, 0x90]).unwrap() else {
            panic!()
        };
        assert_eq!(info.language.unwrap().as_str(), "yue");
        let Some(MediaEvent::Frame { frame, .. }) = m.aac(96_000, 48_000, Bytes::new()) else {
            panic!()
        };
        assert_eq!(frame.pts, 96_000);
        assert!(m.aac_config(&[0xff]).is_err());
    }
}
